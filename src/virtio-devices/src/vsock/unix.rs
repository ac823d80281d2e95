//! The host side, Firecracker's model: one listening Unix socket at
//! `uds_path` for host-initiated connections (`CONNECT <port>\n`, answered
//! `OK <host_port>\n` once the guest accepts), and guest-initiated
//! connections to host port P reaching the Unix socket `<uds_path>_P`.
//!
//! The muxer owns every host socket and connection and routes packets by
//! (host port, guest port). It never blocks: sockets are non-blocking and a
//! guest connect to a host socket whose backlog is full is refused.
//! Descriptor registration (epoll) goes through [`Registry`] in
//! [`Muxer::sync`], the one place that adds, changes and removes them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::{debug, warn};

use super::connection::{is_known_op, Connection, Verdict};
use super::metrics::VsockMetrics;
use super::packet::{Header, TxPacket, OP_REQUEST, OP_RST, OP_RW, TYPE_STREAM};
use super::HOST_CID;

/// Connections at most (each holds a host descriptor and up to 256 KiB).
pub const MAX_CONNECTIONS: usize = 1024;
/// Host connections that have not sent their `CONNECT` line yet, at most.
pub const MAX_PENDING: usize = 64;
/// Longest `CONNECT <port>\n` line accepted ("CONNECT 4294967295\n" is 19).
pub const MAX_CONNECT_LINE: usize = 32;
/// RSTs for packets without a connection queued at most.
pub const MAX_RST_QUEUE: usize = 256;
/// First host port given to host-initiated connections (Firecracker's choice too).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// (host port, guest port).
pub type Key = (u32, u32);

/// Why a `CONNECT` line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("line does not start with \"CONNECT \"")]
    NoConnect,
    #[error("port is not a decimal number from 0 to 4294967295")]
    BadPort,
    #[error("line is longer than {MAX_CONNECT_LINE} bytes")]
    TooLong,
}

/// Parses `CONNECT <port>\n` (the newline included, nothing after it).
pub fn parse_connect(line: &[u8]) -> Result<u32, HandshakeError> {
    if line.len() > MAX_CONNECT_LINE {
        return Err(HandshakeError::TooLong);
    }
    let rest = line.strip_prefix(b"CONNECT ").ok_or(HandshakeError::NoConnect)?;
    let digits = rest.strip_suffix(b"\n").ok_or(HandshakeError::BadPort)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::BadPort);
    }
    std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()).ok_or(HandshakeError::BadPort)
}

/// How the muxer's descriptors are watched (the event manager; a recorder in tests).
pub trait Registry {
    fn add(&mut self, fd: RawFd, read: bool, write: bool);
    fn modify(&mut self, fd: RawFd, read: bool, write: bool);
    fn remove(&mut self, fd: RawFd);
}

struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Why the vsock device could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot listen on the vsock Unix socket {}: {source} (remove a stale file, or pick another uds_path)", path.display())]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("cannot create an eventfd for the vsock device: {0}")]
    EventFd(std::io::Error),
}

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    pending: HashMap<RawFd, Pending>,
    conns: HashMap<Key, Connection<UnixStream>>,
    by_fd: HashMap<RawFd, Key>,
    /// Interest each watched descriptor is registered with.
    watched: HashMap<RawFd, (bool, bool)>,
    /// Descriptors that hung up: no longer watched (level-triggered HUP would spin).
    hung: HashSet<RawFd>,
    /// Connections that may have a packet for the guest, in turn.
    rxq: VecDeque<Key>,
    in_rxq: HashSet<Key>,
    rst_q: VecDeque<Header>,
    /// Connections whose registration or life may have changed.
    dirty: HashSet<Key>,
    /// Closed sockets still registered: removed in `sync`, then dropped.
    graveyard: Vec<(RawFd, Box<dyn Send>)>,
    next_local_port: u32,
    pub metrics: VsockMetrics,
}

impl Muxer {
    /// Listens on `uds_path` (which must not exist: Firecracker's rule).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Muxer, BackendError> {
        let bind_err = |source| BackendError::Bind { path: uds_path.to_owned(), source };
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_owned(),
            listener,
            pending: HashMap::new(),
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            watched: HashMap::new(),
            hung: HashSet::new(),
            rxq: VecDeque::new(),
            in_rxq: HashSet::new(),
            rst_q: VecDeque::new(),
            dirty: HashSet::new(),
            graveyard: Vec::new(),
            next_local_port: FIRST_LOCAL_PORT,
            metrics: VsockMetrics::default(),
        })
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A connection, for tests and diagnostics.
    pub fn connection(&self, key: Key) -> Option<&Connection<UnixStream>> {
        self.conns.get(&key)
    }

    /// After any change to a connection: a reset one goes at once (its RST
    /// queued, its host socket closed in `sync`), one with something to
    /// send gets its turn.
    fn touch(&mut self, key: Key) {
        self.dirty.insert(key);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.take_rst() {
            self.metrics.conns_killed += 1;
            let (src_port, dst_port) = (conn.local_port, conn.peer_port);
            self.push_rst(HOST_CID, src_port, dst_port);
            return;
        }
        if conn.has_rx() && self.in_rxq.insert(key) {
            self.rxq.push_back(key);
        }
    }

    fn push_rst(&mut self, src_cid: u64, src_port: u32, dst_port: u32) {
        if self.rst_q.len() >= MAX_RST_QUEUE {
            self.metrics.rst_dropped += 1;
            return;
        }
        self.rst_q.push_back(Header {
            src_cid,
            dst_cid: self.guest_cid,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Default::default()
        });
    }

    fn queue_rst_for(&mut self, h: &Header) {
        if h.op != OP_RST {
            self.push_rst(h.dst_cid, h.dst_port, h.src_port);
        }
    }

    /// A packet the guest sent (already read from its chain, lengths checked).
    pub fn on_guest_packet(&mut self, pkt: &TxPacket) {
        let h = &pkt.hdr;
        if h.src_cid != self.guest_cid {
            debug!("vsock: packet from CID {} (the guest is {}) dropped", h.src_cid, self.guest_cid);
            self.metrics.malformed_packets += 1;
            return;
        }
        if h.dst_cid != HOST_CID || h.type_ != TYPE_STREAM || !is_known_op(h.op) {
            debug!("vsock: packet to CID {} type {} op {} refused", h.dst_cid, h.type_, h.op);
            self.queue_rst_for(h);
            return;
        }
        if h.op != OP_RW && !pkt.payload.is_empty() {
            // Only data packets carry payload.
            self.metrics.malformed_packets += 1;
        }
        let key = (h.dst_port, h.src_port);
        if let Some(conn) = self.conns.get_mut(&key) {
            if h.op == OP_REQUEST {
                // A second REQUEST on a live connection: reset it.
                conn.kill();
            } else {
                match conn.on_packet(h, &pkt.payload) {
                    Verdict::Ok | Verdict::Gone => {}
                    Verdict::Kill => self.metrics.tx_write_fails += u64::from(h.op == OP_RW),
                }
            }
            self.touch(key);
            return;
        }
        match h.op {
            OP_REQUEST => self.guest_connect(h),
            OP_RST => {}
            _ => self.queue_rst_for(h),
        }
    }

    /// The guest connects to host port `h.dst_port`: `<uds_path>_<port>`.
    fn guest_connect(&mut self, h: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            warn!("vsock: guest connection to port {} refused: {MAX_CONNECTIONS} connections open", h.dst_port);
            self.metrics.conns_refused += 1;
            self.queue_rst_for(h);
            return;
        }
        let mut path = self.uds_path.as_os_str().to_owned();
        path.push(format!("_{}", h.dst_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                let key = (h.dst_port, h.src_port);
                self.by_fd.insert(stream.as_raw_fd(), key);
                self.conns.insert(key, Connection::new_peer(stream, h.dst_port, h));
                self.metrics.conns_added += 1;
                self.touch(key);
            }
            Err(e) => {
                debug!("vsock: guest connection to {}: {e}", Path::new(&path).display());
                self.metrics.conns_refused += 1;
                self.queue_rst_for(h);
            }
        }
    }

    /// Accepts host connections on `uds_path`.
    pub fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("vsock: accept on {}: {e}", self.uds_path.display());
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING || self.conns.len() >= MAX_CONNECTIONS {
                warn!("vsock: host connection closed: too many connections or handshakes in progress");
                self.metrics.handshake_errors += 1;
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("vsock: host connection closed: {e}");
                continue;
            }
            self.pending.insert(stream.as_raw_fd(), Pending { stream, line: Vec::new() });
        }
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = if p == u32::MAX { FIRST_LOCAL_PORT } else { p + 1 };
            // At most MAX_CONNECTIONS ports are taken, so this ends.
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    /// A watched host socket is ready.
    pub fn on_stream_event(&mut self, fd: RawFd, readable: bool, writable: bool, hangup: bool) {
        if self.pending.contains_key(&fd) {
            self.read_handshake(fd);
            return;
        }
        let Some(&key) = self.by_fd.get(&fd) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if readable || hangup {
            conn.set_readable();
        }
        if (writable || hangup) && conn.flush() == Verdict::Kill {
            self.metrics.tx_write_fails += 1;
        }
        if hangup {
            self.hung.insert(fd);
        }
        self.touch(key);
    }

    /// Reads the `CONNECT` line byte by byte: whatever follows it is data
    /// for the guest and stays in the socket.
    fn read_handshake(&mut self, fd: RawFd) {
        let Some(p) = self.pending.get_mut(&fd) else {
            return;
        };
        let outcome = loop {
            let mut b = [0u8; 1];
            match p.stream.read(&mut b) {
                Ok(0) => break Some(Err(None)),
                Ok(_) => {
                    p.line.push(b[0]);
                    if b[0] == b'\n' {
                        break Some(parse_connect(&p.line).map_err(Some));
                    }
                    if p.line.len() >= MAX_CONNECT_LINE {
                        break Some(Err(Some(HandshakeError::TooLong)));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break Some(Err(None)),
            }
        };
        let Some(outcome) = outcome else {
            return;
        };
        let Some(Pending { stream, .. }) = self.pending.remove(&fd) else {
            return;
        };
        match outcome {
            Ok(port) if self.conns.len() < MAX_CONNECTIONS => {
                let local = self.alloc_local_port(port);
                let key = (local, port);
                self.by_fd.insert(fd, key);
                self.conns.insert(key, Connection::new_local(stream, local, port));
                self.metrics.conns_added += 1;
                self.touch(key);
            }
            other => {
                if let Err(Some(e)) = other {
                    debug!("vsock: host connection closed: bad CONNECT line: {e}");
                }
                self.metrics.handshake_errors += 1;
                self.bury(fd, Box::new(stream));
            }
        }
    }

    fn bury(&mut self, fd: RawFd, owner: Box<dyn Send>) {
        self.graveyard.push((fd, owner));
    }

    /// Something to put in an RX buffer.
    pub fn has_rx(&self) -> bool {
        !self.rst_q.is_empty() || !self.rxq.is_empty()
    }

    /// The next packet for the guest; RW payload goes to `buf`. Returns the
    /// header (its `len` set) or None if no connection had anything after all.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<Header> {
        if let Some(h) = self.rst_q.pop_front() {
            self.metrics.rst_sent += 1;
            return Some(h);
        }
        while let Some(key) = self.rxq.pop_front() {
            self.in_rxq.remove(&key);
            self.dirty.insert(key);
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let Some(p) = conn.next_rx(buf) else {
                continue;
            };
            let (buf_alloc, fwd_cnt) = conn.credit_fields();
            let hdr = Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: conn.local_port,
                dst_port: conn.peer_port,
                // At most MAX_PAYLOAD.
                len: p.len as u32,
                type_: TYPE_STREAM,
                op: p.op,
                flags: p.flags,
                buf_alloc,
                fwd_cnt,
            };
            match p.op {
                OP_RST => {
                    self.metrics.rst_sent += 1;
                    self.metrics.conns_killed += 1;
                    if conn.read_failed {
                        self.metrics.rx_read_fails += 1;
                    }
                }
                super::packet::OP_CREDIT_UPDATE => self.metrics.credit_updates_sent += 1,
                _ => {}
            }
            self.touch(key);
            return Some(hdr);
        }
        None
    }

    /// Resets host-initiated connections the guest left unanswered past
    /// their timeout: the host socket is closed without an `OK`.
    pub fn expire_connects(&mut self, now: std::time::Instant) {
        let expired: Vec<Key> = self.conns.iter().filter(|(_, c)| c.connect_expired(now)).map(|(k, _)| *k).collect();
        for key in expired {
            if let Some(c) = self.conns.get_mut(&key) {
                c.kill();
                self.metrics.connect_timeouts += 1;
            }
            self.touch(key);
        }
    }

    /// Drops every connection (device reset): the host sides see EOF.
    pub fn drop_connections(&mut self) {
        let conns: Vec<_> = self.conns.drain().collect();
        for (_, c) in conns {
            let fd = c.stream().as_raw_fd();
            self.metrics.conns_removed += 1;
            self.bury(fd, Box::new(c));
        }
        self.by_fd.clear();
        self.rxq.clear();
        self.in_rxq.clear();
        self.rst_q.clear();
        self.dirty.clear();
    }

    /// Brings epoll registration in line with the sockets' state and drops
    /// finished connections. Call after every batch of work.
    pub fn sync(&mut self, reg: &mut dyn Registry) {
        for (fd, owner) in std::mem::take(&mut self.graveyard) {
            if self.watched.remove(&fd).is_some() {
                reg.remove(fd);
            }
            self.hung.remove(&fd);
            drop(owner);
        }
        let pending: Vec<RawFd> = self.pending.keys().copied().collect();
        for fd in pending {
            if let std::collections::hash_map::Entry::Vacant(e) = self.watched.entry(fd) {
                reg.add(fd, true, false);
                e.insert((true, false));
            }
        }
        for key in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get(&key) else {
                continue;
            };
            let fd = conn.stream().as_raw_fd();
            if conn.is_done() {
                if self.watched.remove(&fd).is_some() {
                    reg.remove(fd);
                }
                self.hung.remove(&fd);
                self.by_fd.remove(&fd);
                self.conns.remove(&key);
                self.metrics.conns_removed += 1;
                continue;
            }
            let want = conn.interest();
            match (self.hung.contains(&fd), self.watched.get(&fd).copied()) {
                (true, Some(_)) => {
                    reg.remove(fd);
                    self.watched.remove(&fd);
                }
                (true, None) => {}
                (false, None) => {
                    reg.add(fd, want.0, want.1);
                    self.watched.insert(fd, want);
                }
                (false, Some(have)) if have != want => {
                    reg.modify(fd, want.0, want.1);
                    self.watched.insert(fd, want);
                }
                (false, Some(_)) => {}
            }
        }
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // The socket file would make the next bind fail.
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

/// Connects to a Unix stream socket without blocking: a listener with a
/// full backlog refuses (EAGAIN) rather than stalling the event loop.
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(ErrorKind::InvalidInput, "socket path too long or has a NUL byte"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we just created and own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes; fd is open.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52\n"), Ok(52));
        assert_eq!(parse_connect(b"CONNECT 0\n"), Ok(0));
        assert_eq!(parse_connect(b"CONNECT 4294967295\n"), Ok(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296\n"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"CONNECT 99999999999\n"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"CONNECT \n"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"CONNECT -1\n"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"CONNECT +1\n"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"CONNECT 52 \n"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"CONNECT 52\r\n"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"CONNECT 52"), Err(HandshakeError::BadPort));
        assert_eq!(parse_connect(b"connect 52\n"), Err(HandshakeError::NoConnect));
        assert_eq!(parse_connect(b"CONNECT52\n"), Err(HandshakeError::NoConnect));
        assert_eq!(parse_connect(b"\n"), Err(HandshakeError::NoConnect));
        assert_eq!(parse_connect(&[b'C'; 40]), Err(HandshakeError::TooLong));
        assert_eq!(parse_connect(b"CONNECT \xff\n"), Err(HandshakeError::BadPort));
    }
}
