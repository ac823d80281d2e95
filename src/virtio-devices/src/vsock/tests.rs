//! vsock unit tests: the connection state machine over an in-memory stream,
//! the muxer over real Unix sockets, and the device over simulated queues
//! (virtio-queue's MockSplitQueue) with malformed guest packets.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::connection::{Connection, ShutdownWrite, State, Verdict, BUF_ALLOC, CREDIT_UPDATE_THRESHOLD};
use super::device::Vsock;
use super::packet::*;
use super::unix::{Muxer, Registry, MAX_RST_QUEUE};
use super::HOST_CID;
use crate::{ActivateContext, GuestMemory, Interrupt, VirtioDevice};

const CID: u64 = 3;

// ---- the connection over an in-memory stream ----

#[derive(Default)]
struct Mock {
    input: VecDeque<u8>,
    eof: bool,
    output: Vec<u8>,
    /// Bytes the host takes before writes would block (None: unlimited).
    room: Option<usize>,
    broken: bool,
    write_shut: bool,
}

impl Read for Mock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.broken {
            return Err(ErrorKind::ConnectionReset.into());
        }
        if self.input.is_empty() {
            return if self.eof { Ok(0) } else { Err(ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(self.input.len());
        for (d, s) in buf.iter_mut().zip(self.input.drain(..n)) {
            *d = s;
        }
        Ok(n)
    }
}

impl Write for Mock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.broken || self.write_shut {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let n = self.room.map_or(buf.len(), |r| r.min(buf.len()));
        if n == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        if let Some(r) = self.room.as_mut() {
            *r -= n;
        }
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ShutdownWrite for Mock {
    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.write_shut = true;
        Ok(())
    }
}

fn guest_hdr(op: u16, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: 1234,
        dst_port: 52,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

fn established(buf_alloc: u32) -> Connection<Mock> {
    let mut c = Connection::new_peer(Mock::default(), 52, &guest_hdr(OP_REQUEST, 0, buf_alloc, 0));
    let mut b = [0u8; 16];
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_RESPONSE));
    c
}

#[test]
fn host_data_respects_the_guests_credit() {
    let mut c = established(1000);
    c.stream_mut_for_tests().input.extend(std::iter::repeat_n(7u8, 3000));
    c.set_readable();
    let mut buf = vec![0u8; 4096];
    let p = c.next_rx(&mut buf).unwrap();
    assert_eq!((p.op, p.len), (OP_RW, 1000));
    assert_eq!(c.peer_credit(), 0);
    // No credit: nothing to send and no interest in reading.
    assert!(!c.has_rx());
    assert!(c.next_rx(&mut buf).is_none());
    assert_eq!(c.interest(), (false, false));
    // The guest forwarded 600 bytes: 600 more may go.
    assert_eq!(c.on_packet(&guest_hdr(OP_CREDIT_UPDATE, 0, 1000, 600), &[]), Verdict::Ok);
    assert_eq!(c.peer_credit(), 600);
    assert_eq!(c.next_rx(&mut buf).map(|p| p.len), Some(600));
    // A guest claiming more forwarded than was sent gets no credit, no panic.
    c.on_packet(&guest_hdr(OP_CREDIT_UPDATE, 0, 1000, 5000), &[]);
    assert_eq!(c.peer_credit(), 0);
}

#[test]
fn guest_data_reaches_the_host_and_credit_is_returned() {
    let mut c = established(4096);
    let chunk = vec![1u8; 16 * 1024];
    let mut sent = 0u32;
    while sent < CREDIT_UPDATE_THRESHOLD {
        assert_eq!(c.on_packet(&guest_hdr(OP_RW, chunk.len() as u32, 4096, 0), &chunk), Verdict::Ok);
        sent += chunk.len() as u32;
    }
    assert_eq!(c.stream_mut_for_tests().output.len(), sent as usize);
    let mut b = [0u8; 16];
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_CREDIT_UPDATE));
    assert_eq!(c.credit_fields(), (BUF_ALLOC, sent));
    // CREDIT_REQUEST is answered.
    c.on_packet(&guest_hdr(OP_CREDIT_REQUEST, 0, 4096, 0), &[]);
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_CREDIT_UPDATE));
}

#[test]
fn guest_over_its_credit_is_reset() {
    let mut c = established(4096);
    // The host reads nothing: everything is buffered.
    c.stream_mut_for_tests().room = Some(0);
    let chunk = vec![1u8; 64 * 1024];
    for _ in 0..(BUF_ALLOC as usize / chunk.len()) {
        assert_eq!(c.on_packet(&guest_hdr(OP_RW, chunk.len() as u32, 4096, 0), &chunk), Verdict::Ok);
    }
    assert_eq!(c.buffered(), BUF_ALLOC as usize);
    assert!(c.interest().1, "waits for the host to take data");
    assert_eq!(c.on_packet(&guest_hdr(OP_RW, 1, 4096, 0), &[9]), Verdict::Kill);
    assert_eq!(c.buffered(), BUF_ALLOC as usize, "nothing more was buffered");
    let mut b = [0u8; 16];
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_RST));
    assert!(c.is_done());
}

#[test]
fn protocol_violations_and_host_errors_reset() {
    let mut b = [0u8; 16];
    // Data before the guest accepted a host-initiated connection.
    let mut c = Connection::new_local(Mock::default(), 1 << 30, 52);
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_REQUEST));
    assert_eq!(c.on_packet(&guest_hdr(OP_RW, 1, 0, 0), &[1]), Verdict::Kill);
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_RST));
    // A RESPONSE on an established connection.
    let mut c = established(4096);
    assert_eq!(c.on_packet(&guest_hdr(OP_RESPONSE, 0, 0, 0), &[]), Verdict::Kill);
    // Data after the guest said it would send no more.
    let mut c = established(4096);
    let mut h = guest_hdr(OP_SHUTDOWN, 0, 4096, 0);
    h.flags = SHUTDOWN_F_SEND;
    assert_eq!(c.on_packet(&h, &[]), Verdict::Ok);
    assert_eq!(c.on_packet(&guest_hdr(OP_RW, 1, 4096, 0), &[1]), Verdict::Kill);
    // The host socket broke.
    let mut c = established(4096);
    c.stream_mut_for_tests().broken = true;
    assert_eq!(c.on_packet(&guest_hdr(OP_RW, 1, 4096, 0), &[1]), Verdict::Kill);
    let mut c = established(4096);
    c.stream_mut_for_tests().broken = true;
    c.set_readable();
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_RST));
    // The guest's RST: gone, nothing sent back.
    let mut c = established(4096);
    assert_eq!(c.on_packet(&guest_hdr(OP_RST, 0, 0, 0), &[]), Verdict::Gone);
    assert!(c.is_done());
    assert!(c.next_rx(&mut b).is_none());
}

#[test]
fn host_initiated_handshake_answers_ok_with_the_host_port() {
    let mut b = [0u8; 16];
    let mut c = Connection::new_local(Mock::default(), (1 << 30) + 7, 52);
    assert_eq!(c.state(), State::LocalInit);
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_REQUEST));
    assert_eq!(c.on_packet(&guest_hdr(OP_RESPONSE, 0, 4096, 0), &[]), Verdict::Ok);
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.stream_mut_for_tests().output, format!("OK {}\n", (1u32 << 30) + 7).into_bytes());
}

#[test]
fn shutdowns_close_each_half_then_reset() {
    let mut b = [0u8; 64];
    let mut c = established(4096);
    // Host EOF: the guest hears SHUTDOWN(SEND) and may still send.
    c.stream_mut_for_tests().eof = true;
    c.set_readable();
    let p = c.next_rx(&mut b).unwrap();
    assert_eq!((p.op, p.flags), (OP_SHUTDOWN, SHUTDOWN_F_SEND));
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.on_packet(&guest_hdr(OP_RW, 3, 4096, 0), b"abc"), Verdict::Ok);
    // Guest SHUTDOWN(SEND): after the buffered data, the host's write half
    // closes; both halves done, the connection ends with an RST.
    c.stream_mut_for_tests().room = Some(0);
    assert_eq!(c.on_packet(&guest_hdr(OP_RW, 2, 4096, 0), b"de"), Verdict::Ok);
    let mut h = guest_hdr(OP_SHUTDOWN, 0, 4096, 0);
    h.flags = SHUTDOWN_F_SEND;
    assert_eq!(c.on_packet(&h, &[]), Verdict::Ok);
    assert!(!c.stream_mut_for_tests().write_shut, "buffered data first");
    c.stream_mut_for_tests().room = None;
    assert_eq!(c.flush(), Verdict::Ok);
    assert!(c.stream_mut_for_tests().write_shut);
    assert_eq!(c.stream_mut_for_tests().output, b"abcde");
    assert_eq!(c.next_rx(&mut b).map(|p| p.op), Some(OP_RST));
    assert!(c.is_done());
}

// ---- the muxer over real Unix sockets ----

#[derive(Default)]
struct Rec(Vec<(&'static str, RawFd, bool, bool)>);

impl Registry for Rec {
    fn add(&mut self, fd: RawFd, r: bool, w: bool) {
        self.0.push(("add", fd, r, w));
    }
    fn modify(&mut self, fd: RawFd, r: bool, w: bool) {
        self.0.push(("modify", fd, r, w));
    }
    fn remove(&mut self, fd: RawFd) {
        self.0.push(("remove", fd, false, false));
    }
}

fn tmp_sock(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("vsock-ut-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn rx_all(m: &mut Muxer) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MAX_PAYLOAD];
    while m.has_rx() {
        match m.next_rx(&mut buf) {
            Some(h) => out.push((h, buf[..h.len as usize].to_vec())),
            None => break,
        }
    }
    out
}

fn pkt(op: u16, src_port: u32, dst_port: u32, payload: &[u8]) -> TxPacket {
    let mut hdr = guest_hdr(op, payload.len() as u32, 65536, 0);
    hdr.src_port = src_port;
    hdr.dst_port = dst_port;
    TxPacket { hdr, payload: payload.to_vec() }
}

#[test]
fn guest_connects_to_a_host_listener_or_gets_rst() {
    let uds = tmp_sock("g");
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut reg = Rec::default();
    // Nobody listens on port 52: RST back to the guest's port.
    m.on_guest_packet(&pkt(OP_REQUEST, 1234, 52, &[]));
    let out = rx_all(&mut m);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.op, out[0].0.dst_port, out[0].0.src_port, out[0].0.dst_cid), (OP_RST, 1234, 52, CID));
    assert_eq!(m.metrics.conns_refused, 1);
    // <uds>_53 listens: RESPONSE, then data flows both ways.
    let host = UnixListener::bind(format!("{}_53", uds.display())).unwrap();
    m.on_guest_packet(&pkt(OP_REQUEST, 1235, 53, &[]));
    let out = rx_all(&mut m);
    assert_eq!(out.iter().map(|(h, _)| h.op).collect::<Vec<_>>(), vec![OP_RESPONSE]);
    m.sync(&mut reg);
    assert!(matches!(reg.0.last(), Some(("add", _, true, false))), "{:?}", reg.0);
    let (mut hs, _) = host.accept().unwrap();
    m.on_guest_packet(&pkt(OP_RW, 1235, 53, b"hello"));
    let mut got = [0u8; 5];
    hs.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    hs.write_all(b"world").unwrap();
    let fd = m.connection((53, 1235)).map(|c| std::os::fd::AsRawFd::as_raw_fd(c.stream())).unwrap();
    m.on_stream_event(fd, true, false, false);
    let out = rx_all(&mut m);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.op, out[0].1.as_slice()), (OP_RW, &b"world"[..]));
    // The guest resets it: the host sees EOF, the socket is unwatched.
    m.on_guest_packet(&pkt(OP_RST, 1235, 53, &[]));
    m.sync(&mut reg);
    assert_eq!(m.connection_count(), 0);
    assert_eq!((m.metrics.conns_added, m.metrics.conns_removed, m.metrics.conns_killed), (1, 1, 0));
    assert!(matches!(reg.0.last(), Some(("remove", f, _, _)) if *f == fd));
    hs.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(hs.read(&mut got).unwrap(), 0);
    let _ = std::fs::remove_file(format!("{}_53", uds.display()));
    drop(m);
    assert!(!uds.exists(), "the listening socket file is removed");
}

#[test]
fn host_socket_failures_reset_the_guests_connection() {
    let uds = tmp_sock("f");
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut reg = Rec::default();
    let host = UnixListener::bind(format!("{}_54", uds.display())).unwrap();
    let fd_of = |m: &Muxer, k| m.connection(k).map(|c| std::os::fd::AsRawFd::as_raw_fd(c.stream())).unwrap();
    // The host closes with our data unread: reading its socket fails.
    m.on_guest_packet(&pkt(OP_REQUEST, 2000, 54, &[]));
    rx_all(&mut m);
    let (hs, _) = host.accept().unwrap();
    m.on_guest_packet(&pkt(OP_RW, 2000, 54, b"unread"));
    drop(hs);
    let fd = fd_of(&m, (54, 2000));
    m.on_stream_event(fd, true, false, true);
    let out = rx_all(&mut m);
    assert_eq!(out.iter().map(|(h, _)| h.op).collect::<Vec<_>>(), vec![OP_RST]);
    m.sync(&mut reg);
    assert_eq!((m.metrics.rx_read_fails, m.metrics.conns_killed, m.connection_count()), (1, 1, 0));
    // The host is gone when the guest writes: the write fails.
    m.on_guest_packet(&pkt(OP_REQUEST, 2001, 54, &[]));
    rx_all(&mut m);
    let (hs, _) = host.accept().unwrap();
    drop(hs);
    m.on_guest_packet(&pkt(OP_RW, 2001, 54, b"x"));
    let out = rx_all(&mut m);
    assert_eq!(out.iter().map(|(h, _)| h.op).collect::<Vec<_>>(), vec![OP_RST]);
    assert_eq!((m.metrics.tx_write_fails, m.metrics.conns_killed), (1, 2));
    // CREDIT_REQUEST is answered with our counters.
    m.on_guest_packet(&pkt(OP_REQUEST, 2002, 54, &[]));
    rx_all(&mut m);
    let _hs = host.accept().unwrap();
    m.on_guest_packet(&pkt(OP_CREDIT_REQUEST, 2002, 54, &[]));
    let out = rx_all(&mut m);
    assert_eq!(out.iter().map(|(h, _)| (h.op, h.buf_alloc)).collect::<Vec<_>>(), vec![(OP_CREDIT_UPDATE, BUF_ALLOC)]);
    assert_eq!(m.metrics.credit_updates_sent, 1);
    let _ = std::fs::remove_file(format!("{}_54", uds.display()));
}

/// A guest peer as Linux's driver behaves: consumes RW into `got`, returns
/// credit every 64 KiB, sends its data within the host's credit, then
/// SHUTDOWN(SEND); answers SHUTDOWN(SEND) by reading to the end.
struct SimGuest {
    port: u32,
    host_port: u32,
    data: Vec<u8>,
    sent: usize,
    shut_sent: bool,
    got: Vec<u8>,
    fwd_cnt: u32,
    fwd_reported: u32,
    host_buf_alloc: u32,
    host_fwd_cnt: u32,
    host_eof: bool,
    reset: bool,
}

impl SimGuest {
    const BUF_ALLOC: u32 = 256 * 1024;

    fn pkt(&self, op: u16, flags: u32, payload: &[u8]) -> TxPacket {
        let mut p = pkt(op, self.port, self.host_port, payload);
        p.hdr.buf_alloc = Self::BUF_ALLOC;
        p.hdr.fwd_cnt = self.fwd_cnt;
        p.hdr.flags = flags;
        p
    }

    fn receive(&mut self, h: &Header, payload: &[u8]) -> Vec<TxPacket> {
        assert_eq!((h.src_cid, h.dst_cid, h.dst_port), (HOST_CID, CID, self.port));
        self.host_buf_alloc = h.buf_alloc;
        self.host_fwd_cnt = h.fwd_cnt;
        let mut out = Vec::new();
        match h.op {
            OP_REQUEST => {
                self.host_port = h.src_port;
                out.push(self.pkt(OP_RESPONSE, 0, &[]));
            }
            OP_RESPONSE | OP_CREDIT_UPDATE => {}
            OP_RW => {
                assert!(self.got.len() + payload.len() <= self.data.len(), "more than the host sent");
                self.got.extend_from_slice(payload);
                self.fwd_cnt = self.fwd_cnt.wrapping_add(payload.len() as u32);
                if self.fwd_cnt.wrapping_sub(self.fwd_reported) >= 64 * 1024 {
                    self.fwd_reported = self.fwd_cnt;
                    out.push(self.pkt(OP_CREDIT_UPDATE, 0, &[]));
                }
            }
            OP_SHUTDOWN => {
                assert_eq!(h.flags, SHUTDOWN_F_SEND);
                self.host_eof = true;
            }
            OP_RST => self.reset = true,
            op => panic!("unexpected op {op}"),
        }
        out
    }

    /// Data (and then SHUTDOWN) within the host's credit.
    fn transmit(&mut self) -> Vec<TxPacket> {
        let mut out = Vec::new();
        loop {
            let in_flight = (self.sent as u32).wrapping_sub(self.host_fwd_cnt);
            let credit = self.host_buf_alloc.saturating_sub(in_flight) as usize;
            let n = credit.min(self.data.len() - self.sent).min(MAX_PAYLOAD);
            if n == 0 {
                break;
            }
            out.push(self.pkt(OP_RW, 0, &self.data[self.sent..self.sent + n]));
            self.sent += n;
        }
        if self.sent == self.data.len() && !self.shut_sent {
            self.shut_sent = true;
            out.push(self.pkt(OP_SHUTDOWN, SHUTDOWN_F_SEND, &[]));
        }
        out
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed ^ (i >> 12) as u8)).collect()
}

/// Runs one connection until the guest is reset: the host side (a writer
/// and a reader thread on `host`) against `g`; `reg` holds the muxer's
/// registrations so far. Returns what the host read.
fn run_exchange_with(m: &mut Muxer, g: &mut SimGuest, host: UnixStream, host_data: Vec<u8>, mut reg: Rec) -> Vec<u8> {
    let mut w = host.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&host_data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut r = host;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        got
    });
    let start = std::time::Instant::now();
    while !g.reset {
        assert!(start.elapsed() < Duration::from_secs(60), "stuck: guest got {} sent {}", g.got.len(), g.sent);
        let mut to_host = g.transmit();
        // Every socket of the muxer, as if epoll said ready (spurious is fine).
        let fds: Vec<RawFd> = reg.0.iter().filter(|e| e.0 == "add").map(|e| e.1).collect();
        for fd in fds {
            m.on_stream_event(fd, true, true, false);
        }
        for (h, payload) in rx_all(m) {
            to_host.extend(g.receive(&h, &payload));
        }
        for p in &to_host {
            m.on_guest_packet(p);
        }
        m.sync(&mut reg);
        if to_host.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    writer.join().unwrap();
    assert!(g.host_eof, "the host's EOF reached the guest");
    reader.join().unwrap()
}

#[test]
fn four_mib_each_way_in_both_directions_with_flow_control() {
    const LEN: usize = 4 << 20;
    let uds = tmp_sock("x");
    let mut m = Muxer::new(CID, &uds).unwrap();
    let new_guest = |port, host_port| SimGuest {
        port,
        host_port,
        data: pattern(LEN, port as u8),
        sent: 0,
        shut_sent: false,
        got: Vec::new(),
        fwd_cnt: 0,
        fwd_reported: 0,
        host_buf_alloc: 0,
        host_fwd_cnt: 0,
        host_eof: false,
        reset: false,
    };
    // Guest to host port 60: the guest's REQUEST reaches <uds>_60.
    let listener = UnixListener::bind(format!("{}_60", uds.display())).unwrap();
    let mut g = new_guest(3000, 60);
    m.on_guest_packet(&g.pkt(OP_REQUEST, 0, &[]));
    let mut reg = Rec::default();
    let out = rx_all(&mut m);
    assert_eq!(out[0].0.op, OP_RESPONSE);
    g.receive(&out[0].0, &[]);
    m.sync(&mut reg);
    let (host, _) = listener.accept().unwrap();
    let host_data = pattern(LEN, 7);
    let got = run_exchange_with(&mut m, &mut g, host, host_data.clone(), reg);
    assert!(got == g.data, "guest-to-host bytes differ");
    assert!(g.got == host_data, "host-to-guest bytes differ");
    assert_eq!(m.connection_count(), 0);
    // Host to guest port 5000: CONNECT, OK.
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 5000\n").unwrap();
    let mut g = new_guest(5000, 0);
    let mut reg = Rec::default();
    m.accept();
    m.sync(&mut reg);
    let fd = reg.0.last().unwrap().1;
    m.on_stream_event(fd, true, false, false);
    let out = rx_all(&mut m);
    assert_eq!(out[0].0.op, OP_REQUEST);
    for p in g.receive(&out[0].0, &[]) {
        m.on_guest_packet(&p);
    }
    let mut line = vec![0u8; format!("OK {}\n", g.host_port).len()];
    host.read_exact(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", g.host_port).into_bytes());
    let got = run_exchange_with(&mut m, &mut g, host, host_data.clone(), reg);
    assert!(got == g.data, "guest-to-host bytes differ (CONNECT)");
    assert!(g.got == host_data, "host-to-guest bytes differ (CONNECT)");
    assert_eq!(m.connection_count(), 0);
    assert!(m.metrics.credit_updates_sent > 0);
    let _ = std::fs::remove_file(format!("{}_60", uds.display()));
}

fn accept_one(m: &mut Muxer, reg: &mut Rec) -> RawFd {
    m.accept();
    m.sync(reg);
    match reg.0.last() {
        Some(("add", fd, true, false)) => *fd,
        other => panic!("pending socket not watched: {other:?}"),
    }
}

#[test]
fn host_connect_handshake() {
    let uds = tmp_sock("h");
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut reg = Rec::default();
    let mut host = UnixStream::connect(&uds).unwrap();
    let fd = accept_one(&mut m, &mut reg);
    // Split line: nothing happens until the newline.
    host.write_all(b"CONN").unwrap();
    m.on_stream_event(fd, true, false, false);
    assert!(!m.has_rx());
    // The data after the line stays in the socket for the guest.
    host.write_all(b"ECT 52\nearly").unwrap();
    m.on_stream_event(fd, true, false, false);
    let out = rx_all(&mut m);
    assert_eq!(out.len(), 1);
    let req = out[0].0;
    assert_eq!((req.op, req.dst_port, req.dst_cid, req.src_cid), (OP_REQUEST, 52, CID, HOST_CID));
    assert!(req.src_port >= 1 << 30);
    // The guest accepts: the host reads OK <port>.
    m.on_guest_packet(&pkt(OP_RESPONSE, 52, req.src_port, &[]));
    let mut line = vec![0u8; format!("OK {}\n", req.src_port).len()];
    host.read_exact(&mut line).unwrap();
    assert_eq!(String::from_utf8(line).unwrap(), format!("OK {}\n", req.src_port));
    m.on_stream_event(fd, true, false, false);
    let out = rx_all(&mut m);
    assert_eq!((out[0].0.op, out[0].1.as_slice()), (OP_RW, &b"early"[..]));
    assert_eq!(m.metrics.conns_added, 1);
}

#[test]
fn unanswered_host_connects_time_out() {
    let uds = tmp_sock("t");
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut reg = Rec::default();
    let mut host = UnixStream::connect(&uds).unwrap();
    let fd = accept_one(&mut m, &mut reg);
    host.write_all(b"CONNECT 52\n").unwrap();
    m.on_stream_event(fd, true, false, false);
    let req = rx_all(&mut m)[0].0;
    assert_eq!(req.op, OP_REQUEST);
    // Not yet.
    m.expire_connects(std::time::Instant::now());
    assert_eq!(m.connection_count(), 1);
    // The guest never answered: RST, and the host socket closes without OK.
    m.expire_connects(std::time::Instant::now() + super::connection::CONNECT_TIMEOUT);
    let out = rx_all(&mut m);
    assert_eq!((out[0].0.op, out[0].0.src_port), (OP_RST, req.src_port));
    m.sync(&mut reg);
    assert_eq!((m.connection_count(), m.metrics.connect_timeouts), (0, 1));
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(host.read(&mut [0u8; 8]).unwrap(), 0);
    // A guest that accepts after all (a vCPU stalled past the timeout) has
    // its late RESPONSE reset: its accepted socket fails before any data,
    // which is what tests/vsock.rs's guest retries on.
    m.on_guest_packet(&pkt(OP_RESPONSE, 52, req.src_port, &[]));
    let out = rx_all(&mut m);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0.op, out[0].0.src_port, out[0].0.dst_port), (OP_RST, req.src_port, 52));
}

#[test]
fn bad_connect_lines_close_the_host_socket() {
    let uds = tmp_sock("b");
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut reg = Rec::default();
    for line in [&b"HELLO 52\n"[..], b"CONNECT x\n", b"CONNECT 1 2\n", &[b'9'; 40]] {
        let mut host = UnixStream::connect(&uds).unwrap();
        let fd = accept_one(&mut m, &mut reg);
        host.write_all(line).unwrap();
        m.on_stream_event(fd, true, false, false);
        m.sync(&mut reg);
        assert!(matches!(reg.0.last(), Some(("remove", f, _, _)) if *f == fd), "{line:?}");
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 8];
        // Closed without an answer (reset if part of the line was left unread).
        match host.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("{line:?}: {other:?}"),
        }
    }
    // A host that hangs up mid-line.
    let host = UnixStream::connect(&uds).unwrap();
    let fd = accept_one(&mut m, &mut reg);
    drop(host);
    m.on_stream_event(fd, true, false, true);
    assert_eq!(m.metrics.handshake_errors, 5);
    assert_eq!(m.connection_count(), 0);
    assert!(!m.has_rx());
}

#[test]
fn bad_guest_packets_are_dropped_or_reset() {
    let uds = tmp_sock("p");
    let mut m = Muxer::new(CID, &uds).unwrap();
    // Wrong source CID: dropped silently.
    let mut p = pkt(OP_REQUEST, 1, 52, &[]);
    p.hdr.src_cid = 7;
    m.on_guest_packet(&p);
    assert!(!m.has_rx());
    assert_eq!(m.metrics.malformed_packets, 1);
    // Not to the host, not a stream, unknown op, data without a connection: RST.
    let mut to_other = pkt(OP_REQUEST, 1, 52, &[]);
    to_other.hdr.dst_cid = 9;
    let mut dgram = pkt(OP_REQUEST, 1, 52, &[]);
    dgram.hdr.type_ = 2;
    for p in [to_other, dgram, pkt(99, 1, 52, &[]), pkt(OP_RW, 1, 52, b"x"), pkt(OP_SHUTDOWN, 1, 52, &[])] {
        m.on_guest_packet(&p);
        let out = rx_all(&mut m);
        assert_eq!(out.len(), 1, "{:?}", p.hdr);
        assert_eq!(out[0].0.op, OP_RST);
    }
    // An RST for nothing is not answered.
    m.on_guest_packet(&pkt(OP_RST, 1, 52, &[]));
    assert!(!m.has_rx());
    // A guest flooding packets without reading RX: bounded.
    for _ in 0..(MAX_RST_QUEUE + 100) {
        m.on_guest_packet(&pkt(OP_RW, 1, 52, b"x"));
    }
    assert_eq!(rx_all(&mut m).len(), MAX_RST_QUEUE);
    assert_eq!(m.metrics.rst_dropped, 100);
}

// ---- the device over simulated queues ----

const Q_BASE: [u64; 3] = [0x0, 0x1_0000, 0x2_0000];
const USED_OFF: u64 = 0x8000;
const BUF: u64 = 0x10_0000;

struct Dev {
    mem: GuestMemory,
    dev: Vsock,
    _irq: Arc<Interrupt>,
}

fn device(name: &str) -> Dev {
    let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
    let mut dev = Vsock::new(CID, &tmp_sock(name)).unwrap();
    let mut queues = Vec::new();
    for base in Q_BASE {
        let vq = MockSplitQueue::create(&mem, GuestAddress(base), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        q.set_used_ring_address(Some((base + USED_OFF) as u32), Some(0));
        queues.push(q);
    }
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    dev.activate(ActivateContext { mem: mem.clone(), queues, interrupt: irq.clone() }).unwrap();
    Dev { mem, dev, _irq: irq }
}

fn mock(mem: &GuestMemory, q: usize) -> MockSplitQueue<'_, GuestMemory> {
    MockSplitQueue::create(mem, GuestAddress(Q_BASE[q]), 16)
}

/// (id, len) of used element `i` of queue `q`, and the used index.
fn used(mem: &GuestMemory, q: usize, i: u64) -> (u32, u32) {
    let base = Q_BASE[q] + USED_OFF;
    let at = |off: u64| mem.read_obj::<u32>(GuestAddress(base + 4 + 8 * i + off)).unwrap();
    (at(0), at(4))
}

fn used_idx(mem: &GuestMemory, q: usize) -> u16 {
    mem.read_obj(GuestAddress(Q_BASE[q] + USED_OFF + 2)).unwrap()
}

#[test]
fn malformed_tx_chains_are_consumed_and_counted() {
    let Dev { mem, mut dev, .. } = device("d1");
    let tx = mock(&mem, 1);
    // 1: shorter than a header. 2: payload longer than 64 KiB. 3: payload
    // longer than the chain. 4: a header outside guest memory.
    let mut big = guest_hdr(OP_RW, (MAX_PAYLOAD + 1) as u32, 0, 0).to_bytes();
    mem.write_slice(&big, GuestAddress(BUF + 0x1000)).unwrap();
    big = guest_hdr(OP_RW, 100, 0, 0).to_bytes();
    mem.write_slice(&big, GuestAddress(BUF + 0x2000)).unwrap();
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(BUF, 20, 0, 0)),
        RawDescriptor::from(SplitDescriptor::new(BUF + 0x1000, HDR_SIZE as u32, 0, 0)),
        RawDescriptor::from(SplitDescriptor::new(BUF + 0x2000, HDR_SIZE as u32 + 50, 0, 0)),
        RawDescriptor::from(SplitDescriptor::new(0x1000_0000, HDR_SIZE as u32, 0, 0)),
    ];
    for (i, d) in descs.iter().enumerate() {
        tx.add_desc_chains(std::slice::from_ref(d), i as u16).unwrap();
    }
    dev.process_tx();
    assert_eq!(used_idx(&mem, 1), 4);
    assert_eq!(dev.vsock_metrics().malformed_packets, 4);
    assert_eq!(dev.vsock_metrics().tx_packets_count, 0);
    assert!(!dev.muxer().has_rx());
}

#[test]
fn a_request_split_across_descriptors_is_answered_in_an_rx_buffer() {
    let Dev { mem, mut dev, .. } = device("d2");
    let tx = mock(&mem, 1);
    let rx = mock(&mem, 0);
    // The header in two pieces (flags NEXT=1).
    let h = guest_hdr(OP_REQUEST, 0, 4096, 0).to_bytes();
    mem.write_slice(&h[..10], GuestAddress(BUF)).unwrap();
    mem.write_slice(&h[10..], GuestAddress(BUF + 0x100)).unwrap();
    tx.add_desc_chains(
        &[
            RawDescriptor::from(SplitDescriptor::new(BUF, 10, 1, 1)),
            RawDescriptor::from(SplitDescriptor::new(BUF + 0x100, (HDR_SIZE - 10) as u32, 0, 0)),
        ],
        0,
    )
    .unwrap();
    // RX: a buffer too small for a header, then a good one (WRITE=2).
    rx.add_desc_chains(&[RawDescriptor::from(SplitDescriptor::new(BUF + 0x1000, 8, 2, 0))], 0).unwrap();
    rx.add_desc_chains(&[RawDescriptor::from(SplitDescriptor::new(BUF + 0x2000, 4096, 2, 0))], 1).unwrap();
    dev.process_tx();
    dev.process_rx();
    assert_eq!(used(&mem, 0, 0), (0, 0));
    assert_eq!(used(&mem, 0, 1), (1, HDR_SIZE as u32));
    let mut b = [0u8; HDR_SIZE];
    mem.read_slice(&mut b, GuestAddress(BUF + 0x2000)).unwrap();
    let rst = Header::from_bytes(&b);
    // Nobody listens on <uds>_52.
    assert_eq!((rst.op, rst.src_cid, rst.dst_cid, rst.src_port, rst.dst_port), (OP_RST, HOST_CID, CID, 52, 1234));
    let m = dev.vsock_metrics();
    assert_eq!((m.rx_bad_buffers, m.rst_sent, m.conns_refused), (1, 1, 1));
}

#[test]
fn config_space_holds_the_cid_and_reset_posts_transport_reset() {
    let Dev { mem, mut dev, .. } = device("d3");
    let mut b = [0u8; 8];
    dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), CID);
    let mut b = [0xffu8; 4];
    dev.read_config(6, &mut b);
    assert_eq!(b, [0, 0, 0, 0]);
    assert_eq!(dev.device_type(), super::TYPE_VSOCK);
    // A live connection, then a reset: the next driver hears TRANSPORT_RESET.
    let host = UnixListener::bind(format!("{}_53", tmp_sock("d3").display())).unwrap();
    dev.muxer.on_guest_packet(&pkt(OP_REQUEST, 1235, 53, &[]));
    assert_eq!(dev.muxer().connection_count(), 1);
    dev.reset();
    assert_eq!(dev.muxer().connection_count(), 0);
    dev.muxer.sync(&mut Rec::default());
    let (mut hs, _) = host.accept().unwrap();
    hs.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(hs.read(&mut [0u8; 4]).unwrap(), 0, "the host side sees EOF");
    let mut queues = Vec::new();
    for base in Q_BASE {
        let vq = MockSplitQueue::create(&mem, GuestAddress(base), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        q.set_used_ring_address(Some((base + USED_OFF) as u32), Some(0));
        queues.push(q);
    }
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    dev.activate(ActivateContext { mem: mem.clone(), queues, interrupt: irq }).unwrap();
    let ev = mock(&mem, 2);
    mem.write_obj(0xdead_beefu32, GuestAddress(BUF + 0x3000)).unwrap();
    ev.add_desc_chains(&[RawDescriptor::from(SplitDescriptor::new(BUF + 0x3000, 4, 2, 0))], 0).unwrap();
    dev.process_event_queue();
    assert_eq!(used(&mem, 2, 0), (0, 4));
    assert_eq!(mem.read_obj::<u32>(GuestAddress(BUF + 0x3000)).unwrap(), 0, "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET");
    assert_eq!(dev.vsock_metrics().transport_resets_sent, 1);
    let _ = std::fs::remove_file(format!("{}_53", tmp_sock("d3").display()));
}
