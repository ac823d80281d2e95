//! The guest side of MMDS on one network interface: a small TCP/IP stack
//! (smoltcp) that owns the MMDS address, takes the guest frames the
//! virtio-net device intercepted ([`MmdsStack::receive`]), answers ARP and
//! TCP on port 80 with HTTP from [`crate::service`], and queues the frames
//! for the guest ([`MmdsStack::pop_frame`]), which the device copies into
//! guest RX buffers.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use log::warn;
use serde::Serialize;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::data_store::Mmds;
use crate::http::{parse_request, Response, MAX_BODY_LEN, MAX_HEAD_LEN};
use crate::service::{respond, Outcome};

/// The MAC the MMDS address answers ARP with (Firecracker's).
pub const MMDS_MAC: [u8; 6] = [0x06, 0x01, 0x23, 0x45, 0x67, 0x01];
/// The port MMDS serves HTTP on.
pub const MMDS_PORT: u16 = 80;
/// Connections served at once; a SYN beyond them is reset.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest frame exchanged (Ethernet header + 1500).
pub const MAX_FRAME: usize = 1514;
/// Frames from the guest waiting for the stack, and frames waiting for a
/// guest buffer, at most: beyond them the stack drops (TCP retransmits).
pub const MAX_QUEUED_FRAMES: usize = 256;
/// Socket buffers: a request fits the receive side; the answer (up to the
/// document limit) is fed into the send side as it drains.
const RX_BUFFER: usize = MAX_HEAD_LEN + MAX_BODY_LEN;
const TX_BUFFER: usize = 16 * 1024;

/// What the stack did, for the interface's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StackStats {
    /// Guest frames taken (intercepted).
    pub frames_in: u64,
    /// Guest frames dropped because the stack's queue was full.
    pub frames_in_dropped: u64,
    /// Frames the stack made for the guest.
    pub frames_out: u64,
    /// Frames for the guest dropped because no guest buffer came in time.
    pub frames_out_dropped: u64,
    /// HTTP requests answered, by outcome.
    pub requests_served: u64,
    pub tokens_issued: u64,
    pub requests_unauthorized: u64,
    pub requests_refused: u64,
    /// Connections dropped for a request that does not parse.
    pub bad_requests: u64,
}

/// smoltcp's view of the guest: the frames it sent and those it will get.
struct Queues {
    from_guest: VecDeque<Vec<u8>>,
    to_guest: VecDeque<Vec<u8>>,
    dropped_out: u64,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>, &'a mut u64);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        if self.0.len() < MAX_QUEUED_FRAMES {
            self.0.push_back(frame);
        } else {
            *self.1 += 1;
        }
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let f = self.from_guest.pop_front()?;
        Some((Rx(f), Tx(&mut self.to_guest, &mut self.dropped_out)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.to_guest, &mut self.dropped_out))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        // The guest may leave checksums to the device (VIRTIO_NET_F_CSUM):
        // received ones are not verified (the frame never left the host),
        // sent ones are computed.
        let mut csum = ChecksumCapabilities::default();
        csum.ipv4 = Checksum::Tx;
        csum.tcp = Checksum::Tx;
        csum.udp = Checksum::Tx;
        csum.icmpv4 = Checksum::Tx;
        caps.checksum = csum;
        caps
    }
}

/// One TCP connection's HTTP state.
struct Conn {
    handle: SocketHandle,
    /// Request bytes received and not yet answered.
    inbuf: Vec<u8>,
    /// Answer bytes not yet in the socket.
    out: Vec<u8>,
    /// Close once `out` is sent.
    close_after: bool,
}

/// MMDS on one interface. All calls come from the device's event loop.
pub struct MmdsStack {
    store: Arc<Mutex<Mmds>>,
    ip: Ipv4Addr,
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    epoch: std::time::Instant,
    stats: StackStats,
}

impl MmdsStack {
    /// A stack answering on `ip` from `store`.
    pub fn new(store: Arc<Mutex<Mmds>>, ip: Ipv4Addr) -> MmdsStack {
        let mut dev = Queues { from_guest: VecDeque::new(), to_guest: VecDeque::new(), dropped_out: 0 };
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(MMDS_MAC)));
        config.random_seed = crate::token::random_bytes(8)
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0x6d6d_6473);
        let epoch = std::time::Instant::now();
        let mut iface = Interface::new(config, &mut dev, SmolInstant::from_millis(0));
        // Prefix 0: every guest address is on-link, so answers go straight
        // back to the guest's MAC whatever its own subnet.
        iface.update_ip_addrs(|a| {
            if a.push(IpCidr::new(ip.into(), 0)).is_err() {
                warn!("mmds: cannot set the stack's address {ip}");
            }
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut conns = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let sock = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RX_BUFFER]),
                tcp::SocketBuffer::new(vec![0; TX_BUFFER]),
            );
            let handle = sockets.add(sock);
            conns.push(Conn { handle, inbuf: Vec::new(), out: Vec::new(), close_after: false });
        }
        let mut s = MmdsStack { store, ip, iface, dev, sockets, conns, epoch, stats: StackStats::default() };
        s.relisten();
        s
    }

    /// The address the stack answers on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Whether `frame` (its first [`crate::frame::CLASSIFY_LEN`] bytes)
    /// is for this stack.
    pub fn wants(&self, frame: &[u8]) -> bool {
        crate::frame::is_mmds_frame(frame, self.ip)
    }

    /// A frame the guest sent to MMDS (Ethernet header first, no
    /// virtio-net header); processed at once.
    pub fn receive(&mut self, frame: Vec<u8>) {
        self.stats.frames_in += 1;
        if self.dev.from_guest.len() >= MAX_QUEUED_FRAMES {
            self.stats.frames_in_dropped += 1;
            return;
        }
        self.dev.from_guest.push_back(frame);
        self.poll();
    }

    /// The next frame for the guest, if any.
    pub fn pop_frame(&mut self) -> Option<Vec<u8>> {
        let f = self.dev.to_guest.pop_front()?;
        self.stats.frames_out += 1;
        Some(f)
    }

    /// A frame popped with [`MmdsStack::pop_frame`] that found no guest
    /// buffer: put back at the head of the queue.
    pub fn unpop_frame(&mut self, frame: Vec<u8>) {
        self.stats.frames_out -= 1;
        self.dev.to_guest.push_front(frame);
    }

    pub fn has_frames(&self) -> bool {
        !self.dev.to_guest.is_empty()
    }

    pub fn stats(&self) -> StackStats {
        StackStats { frames_out_dropped: self.dev.dropped_out, ..self.stats }
    }

    /// How long until the stack has timed work (retransmissions); `None`:
    /// nothing pending.
    pub fn poll_delay(&mut self) -> Option<std::time::Duration> {
        let now = self.now();
        self.iface.poll_delay(now, &self.sockets).map(|d| std::time::Duration::from_micros(d.total_micros()))
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.epoch.elapsed().as_micros().min(i64::MAX as u128) as i64)
    }

    /// Runs the stack: takes the guest's frames, serves the connections and
    /// queues what they send. Also the timer path (retransmissions).
    pub fn poll(&mut self) {
        for _ in 0..4 {
            let now = self.now();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            if !self.serve() {
                break;
            }
        }
        self.relisten();
    }

    /// Moves request and answer bytes on every connection; whether any moved.
    fn serve(&mut self) -> bool {
        let mut moved = false;
        let wall = std::time::Instant::now();
        for c in &mut self.conns {
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            // Request bytes in.
            while sock.can_recv() && c.inbuf.len() < RX_BUFFER {
                let room = RX_BUFFER - c.inbuf.len();
                let got = sock.recv(|b| {
                    let n = b.len().min(room);
                    (n, b[..n].to_vec())
                });
                match got {
                    Ok(b) if !b.is_empty() => {
                        c.inbuf.extend_from_slice(&b);
                        moved = true;
                    }
                    _ => break,
                }
            }
            // Whole requests answered, in order.
            while !c.close_after {
                match parse_request(&c.inbuf) {
                    Ok(None) => break,
                    Ok(Some((req, used))) => {
                        c.inbuf.drain(..used);
                        let (resp, outcome) = {
                            let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
                            respond(&mut store, &req, wall)
                        };
                        match outcome {
                            Outcome::Served => self.stats.requests_served += 1,
                            Outcome::TokenIssued => self.stats.tokens_issued += 1,
                            Outcome::Unauthorized => self.stats.requests_unauthorized += 1,
                            Outcome::Refused => self.stats.requests_refused += 1,
                        }
                        let keep = req.keep_alive();
                        c.out.extend_from_slice(&resp.to_bytes(req.http11, keep));
                        c.close_after = !keep;
                        moved = true;
                    }
                    Err(e) => {
                        self.stats.bad_requests += 1;
                        c.inbuf.clear();
                        c.out.extend_from_slice(&Response::text(400, e.to_string()).to_bytes(true, false));
                        c.close_after = true;
                        moved = true;
                    }
                }
            }
            // Answer bytes out.
            if !c.out.is_empty() && sock.can_send() {
                if let Ok(n) = sock.send_slice(&c.out) {
                    c.out.drain(..n);
                    moved |= n > 0;
                }
            }
            // The guest closed its side with nothing left to answer.
            let done = c.out.is_empty() && (c.close_after || !sock.may_recv() && c.inbuf.is_empty());
            if done && sock.is_open() && sock.state() != tcp::State::Listen && sock.may_send() {
                sock.close();
                moved = true;
            }
        }
        moved
    }

    /// Puts every finished socket back to listening. A connection MMDS
    /// closed first waits in TIME-WAIT only until the next poll: its slot is
    /// needed more than protection from stray segments of a connection that
    /// only ever carried one answer.
    fn relisten(&mut self) {
        for c in &mut self.conns {
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if sock.state() == tcp::State::TimeWait {
                sock.abort();
            }
            if !sock.is_open() {
                c.inbuf.clear();
                c.out.clear();
                c.close_after = false;
                sock.set_ack_delay(None);
                if let Err(e) = sock.listen(MMDS_PORT) {
                    warn!("mmds: cannot listen on port {MMDS_PORT}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use smoltcp::wire::IpAddress;
    use vmm_config::MmdsVersion;

    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

    /// A guest: its own smoltcp interface whose frames go to the MMDS stack
    /// and back, as the virtio-net device would carry them.
    struct Guest {
        iface: Interface,
        dev: Queues,
        sockets: SocketSet<'static>,
        t: i64,
    }

    impl Guest {
        fn new() -> Guest {
            let mut dev = Queues { from_guest: VecDeque::new(), to_guest: VecDeque::new(), dropped_out: 0 };
            let config = Config::new(HardwareAddress::Ethernet(EthernetAddress([2, 0, 0, 0, 0, 2])));
            let mut iface = Interface::new(config, &mut dev, SmolInstant::from_millis(0));
            iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(169, 254, 0, 2), 16)).unwrap());
            Guest { iface, dev, sockets: SocketSet::new(Vec::new()), t: 0 }
        }

        /// One HTTP exchange over a fresh connection; the raw answer.
        fn http(&mut self, mmds: &mut MmdsStack, request: &str, port: u16) -> String {
            let sock = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 4096]));
            let h = self.sockets.add(sock);
            let cx = self.iface.context();
            self.sockets.get_mut::<tcp::Socket>(h).connect(cx, (IpAddress::from(IP), 80), port).unwrap();
            let (mut sent, mut answer) = (false, Vec::new());
            for _ in 0..200 {
                self.t += 5;
                self.iface.poll(SmolInstant::from_millis(self.t), &mut self.dev, &mut self.sockets);
                // "TX": every guest frame goes to MMDS, and must be for it.
                while let Some(f) = self.dev.to_guest.pop_front() {
                    assert!(mmds.wants(&f), "a guest frame MMDS would not take: {f:02x?}");
                    mmds.receive(f);
                }
                // "RX": MMDS's frames to the guest.
                while let Some(f) = mmds.pop_frame() {
                    self.dev.from_guest.push_back(f);
                }
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                if s.may_send() && !sent {
                    s.send_slice(request.as_bytes()).unwrap();
                    sent = true;
                }
                while s.can_recv() {
                    s.recv(|b| (b.len(), answer.extend_from_slice(b))).unwrap();
                }
                if sent && !s.may_recv() {
                    s.close();
                }
                if sent && s.state() == tcp::State::Closed || s.state() == tcp::State::TimeWait {
                    break;
                }
            }
            self.sockets.remove(h);
            String::from_utf8(answer).unwrap()
        }
    }

    #[test]
    fn guest_gets_a_token_and_reads_a_nested_key_under_v2() {
        let store = Arc::new(Mutex::new(Mmds::default()));
        {
            let mut m = store.lock().unwrap();
            m.set_version(MmdsVersion::V2);
            m.put(json!({"latest": {"meta-data": {"placement": {"zone": "eu-1a"}}}})).unwrap();
        }
        let mut mmds = MmdsStack::new(store, IP);
        let mut g = Guest::new();
        let a = g.http(
            &mut mmds,
            "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-metadata-token-ttl-seconds: 30\r\nConnection: close\r\n\r\n",
            40000,
        );
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        let token = a.split("\r\n\r\n").nth(1).unwrap().to_string();
        assert_eq!(token.len(), 64);
        let a = g.http(
            &mut mmds,
            &format!("GET /latest/meta-data/placement/zone HTTP/1.1\r\nX-metadata-token: {token}\r\nConnection: close\r\n\r\n"),
            40001,
        );
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n") && a.ends_with("\r\n\r\neu-1a"), "{a}");
        let a = g.http(&mut mmds, "GET /latest/meta-data/placement/zone HTTP/1.0\r\n\r\n", 40002);
        assert!(a.starts_with("HTTP/1.0 401 Unauthorized\r\n"), "{a}");
        let st = mmds.stats();
        assert_eq!((st.tokens_issued, st.requests_served, st.requests_unauthorized), (1, 1, 1));
        assert!(st.frames_in > 6 && st.frames_out > 6, "{st:?}");
    }

    #[test]
    fn more_connections_in_a_row_than_slots() {
        let store = Arc::new(Mutex::new(Mmds::default()));
        store.lock().unwrap().put(json!({"k": "v"})).unwrap();
        let mut mmds = MmdsStack::new(store, IP);
        let mut g = Guest::new();
        for i in 0..(3 * MAX_CONNECTIONS as u16) {
            // MMDS closes first (Connection: close), so its side would sit in TIME-WAIT.
            let a = g.http(&mut mmds, "GET /k HTTP/1.1\r\nConnection: close\r\n\r\n", 41000 + i);
            assert!(a.ends_with("\r\n\r\nv"), "request {i}: {a:?}");
        }
    }

    #[test]
    fn a_large_answer_crosses_many_segments() {
        let store = Arc::new(Mutex::new(Mmds::default()));
        let big = "v".repeat(40_000);
        store.lock().unwrap().put(json!({"big": big})).unwrap();
        let mut mmds = MmdsStack::new(store, IP);
        let mut g = Guest::new();
        let a = g.http(&mut mmds, "GET /big HTTP/1.1\r\nConnection: close\r\n\r\n", 40010);
        assert!(a.ends_with(&big), "answer of {} bytes", a.len());
        // The connection slot was freed and listens again.
        let a = g.http(&mut mmds, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n", 40011);
        assert!(a.starts_with("HTTP/1.1 404"), "{a}");
    }
}
