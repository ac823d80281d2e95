//! Tests of the real tap backend against real tap devices. The host side of
//! the tap is an AF_PACKET socket bound to the interface: what it sends, the
//! tap fd reads (guest RX); what the tap fd writes, it receives (guest TX).
//! Needs /dev/net/tun and CAP_NET_ADMIN; otherwise each test prints a loud
//! SKIPPED line and passes.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{DropReason, NetBackend, RxBuffer, TxFrame, Used, VNET_HDR_LEN};
use super::config::*;
use super::device::{Net, TX_QUEUE};
use super::tap::TapBackend;
use super::tap_dev::TapError;
use crate::{ActivateContext, GuestMemory, Interrupt, VirtioDevice};

/// IEEE 802 "local experimental" ethertype: no host stack reacts to it.
const TEST_ETHERTYPE: u16 = 0x88b5;
const PACKET_OUTGOING: u8 = 4;
/// SOL_PACKET option: a virtio_net_hdr precedes each frame.
const PACKET_VNET_HDR: libc::c_int = 15;
/// virtio_net_hdr values for a TCP/IPv4 GSO frame.
const GSO_TCPV4: u8 = 1;
const HDR_F_NEEDS_CSUM: u8 = 1;
const MSS: u16 = 1448;

pub(super) fn skip(test: &str, why: &str) {
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
}

/// Whether real taps can be made here; prints SKIPPED otherwise.
pub(super) fn taps_available(test: &str) -> bool {
    match TapBackend::open("svtprobe%d") {
        Ok(_) => true,
        Err(e) => {
            skip(test, &format!("cannot create a tap: {e}"));
            false
        }
    }
}

pub(super) fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("svt{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

fn ioctl_ifreq(name: &str, req: libc::c_ulong, ifr: &mut libc::ifreq) -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(s >= 0);
    // SAFETY: `s` is a fresh fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    for (d, b) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: the SIOC*IF* requests used here read/write one ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), req, ifr as *mut libc::ifreq) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Brings the interface up (IPv6 off first, so no ND/MLD chatter).
pub(super) fn set_up(name: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ioctl_ifreq(name, libc::SIOCGIFFLAGS, &mut ifr).unwrap();
    // SAFETY: SIOCGIFFLAGS filled ifru_flags.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl_ifreq(name, libc::SIOCSIFFLAGS, &mut ifr).unwrap();
}

/// Takes the interface administratively down.
fn set_down(name: &str) {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ioctl_ifreq(name, libc::SIOCGIFFLAGS, &mut ifr).unwrap();
    // SAFETY: SIOCGIFFLAGS filled ifru_flags.
    unsafe { ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short) };
    ioctl_ifreq(name, libc::SIOCSIFFLAGS, &mut ifr).unwrap();
}

/// An AF_PACKET socket bound to `name`: the host end of the tap.
pub(super) struct HostEnd {
    fd: OwnedFd,
}

impl HostEnd {
    pub(super) fn new(name: &str) -> HostEnd {
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2).
        let s = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(s >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(s) };
        let cname = CString::new(name).unwrap();
        // SAFETY: cname is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert!(ifindex > 0);
        // SAFETY: sockaddr_ll is plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binds our socket to a sockaddr_ll of the right size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        HostEnd { fd }
    }

    pub(super) fn send(&self, frame: &[u8]) {
        // SAFETY: send(2) reads frame.len() bytes from our slice.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
    }

    /// The next incoming (not our own outgoing) test frame, within 2 s.
    fn recv_test_frame(&self) -> Option<Vec<u8>> {
        self.recv_frame(|f| u16::from_be_bytes([f[12], f[13]]) == TEST_ETHERTYPE)
    }

    /// Turns on PACKET_VNET_HDR: every send then starts with a 10-byte
    /// `struct virtio_net_hdr` (lets the host inject GSO frames).
    pub(super) fn with_vnet_hdr(self) -> HostEnd {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from a live local.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_VNET_HDR,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(r, 0, "PACKET_VNET_HDR: {}", std::io::Error::last_os_error());
        self
    }

    /// The next incoming frame for which `want` holds, within 2 s.
    fn recv_frame(&self, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = vec![0u8; 70000];
        while Instant::now() < deadline {
            if !poll_in(self.fd.as_raw_fd(), 100) {
                continue;
            }
            // SAFETY: sockaddr_ll is plain old data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: recvfrom writes at most buf.len() bytes into buf and at
            // most `sl` bytes into sll.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut sl,
                )
            };
            if n < 14 || sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            let n = n as usize;
            if want(&buf[..n]) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    }
}

pub(super) fn poll_in(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn poll_revents(fd: i32) -> libc::c_short {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut p, 1, 0) };
    p.revents
}

/// An Ethernet frame of `len` bytes with the test ethertype and a pattern.
pub(super) fn test_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(seed);
    }
    f
}

/// A TCP/IPv4 frame with `payload` bytes (a GSO "super frame" when larger
/// than the MTU) and a recognisable pattern.
pub(super) fn tcp_frame(payload: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6; // TCP
    ip[12..16].copy_from_slice(&[198, 51, 100, 1]);
    ip[16..20].copy_from_slice(&[198, 51, 100, 2]);
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5001u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x18; // ACK | PSH
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    f
}

/// The 10 bytes of `struct virtio_net_hdr` for a TCP/IPv4 GSO frame.
pub(super) fn gso_hdr() -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0] = HDR_F_NEEDS_CSUM;
    h[1] = GSO_TCPV4;
    h[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    h[4..6].copy_from_slice(&MSS.to_le_bytes()); // gso_size
    h[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
    h[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
    h
}

fn guest_mem() -> GuestMemory {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

fn rx_buf(head: u16, addr: u64, len: u32) -> RxBuffer {
    RxBuffer { head, segs: vec![(GuestAddress(addr), len)], len }
}

/// Runs the backend until `want` completions arrived (or 2 s).
fn pump_rx(tap: &mut TapBackend, mem: &GuestMemory, want: usize) -> Vec<Used> {
    let mut used = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while used.len() < want && Instant::now() < deadline {
        poll_in(tap.event_fds()[0], 100);
        tap.process_event(mem, 0);
        tap.reap_rx(mem, &mut used);
    }
    used
}

fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn num_buffers(mem: &GuestMemory, addr: u64) -> u16 {
    mem.read_obj::<u16>(GuestAddress(addr + 10)).unwrap()
}

#[test]
fn tap_rx_single_buffers_and_truncation() {
    if !taps_available("tap_rx_single_buffers_and_truncation") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    assert_eq!(tap.name(), name);
    set_up(&name);
    let host = HostEnd::new(&name);
    let mem = guest_mem();
    tap.set_features(F_VERSION_1).unwrap();
    // Poison the header so we see the backend writes num_buffers.
    mem.write_slice(&[0xaa; 12], GuestAddress(0x1000)).unwrap();
    tap.post_rx(&mem, rx_buf(3, 0x1000, 1530)).unwrap();
    let f = test_frame(100, 1);
    host.send(&f);
    let used = pump_rx(&mut tap, &mem, 1);
    assert_eq!(used, vec![Used { head: 3, len: 112 }]);
    assert_eq!(num_buffers(&mem, 0x1000), 1);
    assert_eq!(read(&mem, 0x1000, 1)[0], 0, "flags must be 0 without GUEST_CSUM");
    assert_eq!(read(&mem, 0x1000 + 12, 100), f);

    // A frame larger than the (only) buffer is dropped; the buffer stays
    // posted and takes the next frame.
    tap.post_rx(&mem, rx_buf(4, 0x2000, 512)).unwrap();
    host.send(&test_frame(1000, 2));
    let u = pump_rx(&mut tap, &mem, 1);
    assert!(u.is_empty(), "{u:?} {}", tap.metrics());
    assert_eq!(tap.metrics()["rx_drops"]["buffer_too_small"], 1);
    let f = test_frame(300, 3);
    host.send(&f);
    assert_eq!(pump_rx(&mut tap, &mem, 1), vec![Used { head: 4, len: 312 }]);
    assert_eq!(read(&mem, 0x2000 + 12, 300), f);
    assert!(tap.metrics().get("vmm_copied_bytes").is_none(), "the kernel copies, not the VMM");
    // No buffers: the backend reports a stall instead of reading.
    host.send(&test_frame(60, 4));
    assert!(poll_in(tap.event_fds()[0], 1000));
    tap.process_event(&mem, 0);
    assert!(tap.rx_stalled());
}

/// A driver may split the header anywhere: num_buffers (bytes 10-11) half
/// in one descriptor, half in the next; the flags byte in a 1-byte first one.
#[test]
fn tap_rx_header_split_across_descriptors() {
    if !taps_available("tap_rx_header_split_across_descriptors") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    set_up(&name);
    let host = HostEnd::new(&name);
    let mem = guest_mem();
    tap.set_features(F_VERSION_1).unwrap();
    mem.write_slice(&[0xaa; 16], GuestAddress(0x1000)).unwrap();
    mem.write_slice(&[0xaa; 16], GuestAddress(0x3000)).unwrap();
    let buf = RxBuffer { head: 7, segs: vec![(GuestAddress(0x1000), 11), (GuestAddress(0x3000), 1519)], len: 1530 };
    tap.post_rx(&mem, buf).unwrap();
    let f = test_frame(200, 9);
    host.send(&f);
    assert_eq!(pump_rx(&mut tap, &mem, 1), vec![Used { head: 7, len: 212 }]);
    assert_eq!(read(&mem, 0x1000 + 10, 1), vec![1], "num_buffers low byte, end of the first descriptor");
    assert_eq!(read(&mem, 0x3000, 1), vec![0], "num_buffers high byte, start of the second");
    assert_eq!(read(&mem, 0x1000, 1), vec![0], "flags cleared without GUEST_CSUM");
    assert_eq!(read(&mem, 0x3000 + 1, 200), f, "payload after the header");
}

#[test]
fn tap_rx_mergeable_buffers_and_stall() {
    if !taps_available("tap_rx_mergeable_buffers_and_stall") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    set_up(&name);
    let host = HostEnd::new(&name);
    let mem = guest_mem();
    tap.set_features(F_VERSION_1 | F_MRG_RXBUF).unwrap();
    // One 256-byte buffer cannot hold an MTU frame: the backend waits.
    tap.post_rx(&mem, rx_buf(0, 0x10000, 256)).unwrap();
    let f = test_frame(1514, 7);
    host.send(&f);
    assert!(poll_in(tap.event_fds()[0], 2000));
    tap.process_event(&mem, 0);
    assert!(tap.rx_stalled());
    let mut used = Vec::new();
    tap.reap_rx(&mem, &mut used);
    assert!(used.is_empty());
    // Enough buffers now (8 x 256 >= 12 + 1500 + 18).
    for i in 1..8u16 {
        tap.post_rx(&mem, rx_buf(i, 0x10000 + 0x1000 * u64::from(i), 256)).unwrap();
    }
    let used = pump_rx(&mut tap, &mem, 6);
    // The two buffers left (512 B) cannot hold an MTU frame: stalled again.
    assert!(tap.rx_stalled());
    let lens: Vec<u32> = used.iter().map(|u| u.len).collect();
    assert_eq!(lens, vec![256, 256, 256, 256, 256, 246]);
    assert_eq!(used.iter().map(|u| u.head).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(num_buffers(&mem, 0x10000), 6);
    let mut got = read(&mem, 0x10000 + 12, 244);
    for i in 1..6u64 {
        got.extend(read(&mem, 0x10000 + 0x1000 * i, if i == 5 { 246 } else { 256 }));
    }
    assert_eq!(got, f);
    let m = tap.metrics();
    assert_eq!(m["rx_packets"], 1);
    assert_eq!(m["rx_bytes"], 1514);
}

#[test]
fn tap_tx_writes_guest_segments() {
    if !taps_available("tap_tx_writes_guest_segments") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    set_up(&name);
    let host = HostEnd::new(&name);
    let mem = guest_mem();
    tap.set_features(F_VERSION_1).unwrap();
    let f = test_frame(200, 9);
    mem.write_slice(&[0u8; 12], GuestAddress(0x3000)).unwrap();
    mem.write_slice(&f[..50], GuestAddress(0x4000)).unwrap();
    mem.write_slice(&f[50..], GuestAddress(0x5000)).unwrap();
    let frame = TxFrame {
        head: 1,
        segs: vec![(GuestAddress(0x3000), 12), (GuestAddress(0x4000), 50), (GuestAddress(0x5000), 150)],
        len: 212,
    };
    assert_eq!(tap.send(&mem, frame), Ok(true));
    assert_eq!(host.recv_test_frame().expect("frame did not reach the host"), f);
    let m = tap.metrics();
    assert_eq!(m["tx_packets"], 1);
    assert_eq!(m["tx_bytes"], 200);
    // A runt (shorter than an Ethernet header) is refused by the kernel:
    // counted, link unaffected.
    mem.write_slice(&[0u8; 20], GuestAddress(0x6000)).unwrap();
    let runt = TxFrame { head: 2, segs: vec![(GuestAddress(0x6000), 18)], len: 18 };
    assert_eq!(tap.send(&mem, runt), Err(DropReason::BackendError));
    assert!(tap.link_up());
    assert_eq!(tap.metrics()["tx_invalid"], 1);
}

#[test]
fn tap_offloads_are_programmed() {
    if !taps_available("tap_offloads_are_programmed") {
        return;
    }
    let mut tap = TapBackend::open(&unique_name()).unwrap();
    let f = tap.features();
    for bit in [F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_GUEST_TSO6, F_HOST_TSO4, F_HOST_TSO6] {
        assert_ne!(f & bit, 0, "{bit:#x}");
    }
    tap.set_features(F_VERSION_1 | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_MRG_RXBUF).unwrap();
    // With guest GSO the backend waits for room for a 64 KiB frame.
    assert_eq!(tap.metrics()["rx_need"], 12 + 65536 + 18);
    tap.set_features(F_VERSION_1).unwrap();
}

#[test]
fn tap_open_errors_are_one_line_and_actionable() {
    if !taps_available("tap_open_errors_are_one_line_and_actionable") {
        return;
    }
    let e = TapBackend::open("bad/name").err().unwrap();
    assert!(matches!(e, TapError::InvalidName { .. }));
    let name = unique_name();
    let _first = TapBackend::open(&name).unwrap();
    let e = TapBackend::open(&name).err().expect("second open of a single-queue tap must fail").to_string();
    assert!(e.contains(&name) && e.contains("another process has it open"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn tap_attaches_to_existing_persistent_tap() {
    if !taps_available("tap_attaches_to_existing_persistent_tap") {
        return;
    }
    let name = unique_name();
    match Command::new("ip").args(["tuntap", "add", "dev", &name, "mode", "tap"]).status() {
        Ok(s) if s.success() => {}
        _ => return skip("tap_attaches_to_existing_persistent_tap", "`ip tuntap add` unavailable"),
    }
    let r = TapBackend::open(&name);
    let _ = Command::new("ip").args(["link", "del", &name]).status();
    let tap = r.unwrap();
    assert_eq!(tap.name(), name);
}

#[test]
fn tap_deleted_interface_marks_link_down() {
    if !taps_available("tap_deleted_interface_marks_link_down") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    set_up(&name);
    let mem = guest_mem();
    tap.set_features(F_VERSION_1).unwrap();
    tap.post_rx(&mem, rx_buf(0, 0x1000, 1530)).unwrap();
    match Command::new("ip").args(["link", "del", &name]).status() {
        Ok(s) if s.success() => {}
        _ => return skip("tap_deleted_interface_marks_link_down", "`ip link del` unavailable"),
    }
    // The detached fd polls as an error, and reading fails with EBADFD.
    assert_ne!(poll_revents(tap.event_fds()[0]) & libc::POLLERR, 0);
    assert!(tap.link_up());
    tap.process_event(&mem, 0);
    assert!(!tap.link_up());
    assert!(!tap.rx_stalled());
    mem.write_slice(&test_frame(60, 0), GuestAddress(0x2000 + 12)).unwrap();
    let frame = TxFrame { head: 0, segs: vec![(GuestAddress(0x2000), 72)], len: 72 };
    assert_eq!(tap.send(&mem, frame), Err(DropReason::BackendError));
    let m = tap.metrics();
    assert_eq!(m["link"], "gone");
    assert_eq!(m["tx_drops"]["backend_error"], 1);
    assert!(m["last_error"].as_str().unwrap().contains("read"), "{m}");
}

#[test]
fn tap_administratively_down_link_recovers() {
    if !taps_available("tap_administratively_down_link_recovers") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    let mem = guest_mem();
    tap.set_features(F_VERSION_1).unwrap();
    mem.write_slice(&[0u8; 12], GuestAddress(0x2000)).unwrap();
    mem.write_slice(&test_frame(60, 0), GuestAddress(0x2000 + 12)).unwrap();
    let frame = || TxFrame { head: 0, segs: vec![(GuestAddress(0x2000), 72)], len: 72 };
    // The interface is not up yet: the kernel refuses writes with EIO.
    assert_eq!(tap.send(&mem, frame()), Err(DropReason::BackendError));
    assert!(!tap.link_up());
    assert_eq!(tap.metrics()["link"], "down");
    assert!(tap.metrics()["last_error"].as_str().unwrap().contains("write"));
    // Up again: the next write succeeds and the link comes back.
    set_up(&name);
    assert_eq!(tap.send(&mem, frame()), Ok(true));
    assert!(tap.link_up());
}

#[test]
fn tap_link_follows_interface_state_via_netlink() {
    if !taps_available("tap_link_follows_interface_state_via_netlink") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    let mem = guest_mem();
    // Freshly created taps are down.
    assert!(!tap.link_up());
    let fds = tap.event_fds();
    assert_eq!(fds.len(), 2, "tap fd and link-notification socket");
    set_up(&name);
    assert!(poll_in(fds[1], 2000), "no link notification");
    tap.process_event(&mem, 1);
    assert!(tap.link_up());
    set_down(&name);
    assert!(poll_in(fds[1], 2000), "no link notification");
    tap.process_event(&mem, 1);
    assert!(!tap.link_up());
    assert_eq!(tap.metrics()["link"], "down");
    set_up(&name);
    assert!(poll_in(fds[1], 2000));
    tap.process_event(&mem, 1);
    assert!(tap.link_up());
}

/// The whole device over a real tap: a simulated guest driver posts buffers
/// and sends frames; the host end of the tap sees/sends them.
#[test]
fn net_device_over_real_tap_end_to_end() {
    if !taps_available("net_device_over_real_tap_end_to_end") {
        return;
    }
    let name = unique_name();
    let tap = TapBackend::open(&name).unwrap();
    set_up(&name);
    let host = HostEnd::new(&name);
    let mem: &'static GuestMemory = Box::leak(Box::new(guest_mem()));
    let rxq = MockSplitQueue::create(mem, GuestAddress(0), 256);
    let txq = MockSplitQueue::create(mem, GuestAddress(0x1_0000), 256);
    let net = Arc::new(Mutex::new(Net::new(Box::new(tap), None, "net0".into())));
    let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
    em.add_subscriber(net.clone());
    let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
    // Frames arriving before activation are discarded, not spun on.
    host.send(&test_frame(64, 0));
    em.run_with_timeout(200).unwrap();
    {
        let mut n = net.lock().unwrap();
        n.set_acked_features(F_VERSION_1 | F_MRG_RXBUF | F_EVENT_IDX | F_STATUS);
        let queues: Vec<Queue> = vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()];
        n.activate(ActivateContext { mem: mem.clone(), queues, interrupt: irq.clone() }).unwrap();
    }
    // Guest posts 16 buffers of 1536 bytes (what Linux does with MRG_RXBUF).
    let descs: Vec<RawDescriptor> = (0..16u64)
        .map(|i| RawDescriptor::from(SplitDescriptor::new(0x10_0000 + i * 0x800, 1536, VRING_DESC_F_WRITE as u16, 0)))
        .collect();
    rxq.add_desc_chains(&descs, 0).unwrap();
    for _ in 0..5 {
        em.run_with_timeout(10).unwrap();
    }
    // Host -> guest.
    let f = test_frame(1000, 5);
    host.send(&f);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut delivered = None;
    while delivered.is_none() && Instant::now() < deadline {
        em.run_with_timeout(100).unwrap();
        let idx = rxq.used().idx().load();
        for i in 0..idx {
            let e = rxq.used().ring().ref_at(i as usize).unwrap().load();
            let addr = 0x10_0000 + u64::from(e.id()) * 0x800;
            if e.len() as usize == VNET_HDR_LEN + f.len() && read(mem, addr + 12, f.len()) == f {
                delivered = Some(e);
            }
        }
    }
    assert!(delivered.is_some(), "frame did not reach the guest's used ring");
    assert!(irq.irqfd().read().unwrap_or(0) >= 1);
    // Guest -> host: header + frame in one descriptor, kick.
    let g = test_frame(400, 6);
    mem.write_slice(&[0u8; 12], GuestAddress(0x20_0000)).unwrap();
    mem.write_slice(&g, GuestAddress(0x20_0000 + 12)).unwrap();
    txq.add_desc_chains(&[RawDescriptor::from(SplitDescriptor::new(0x20_0000, 412, 0, 0))], 0).unwrap();
    net.lock().unwrap().queue_events()[TX_QUEUE].write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    assert_eq!(txq.used().idx().load(), 1);
    assert_eq!(host.recv_test_frame().expect("guest frame did not reach the host"), g);
    let m = net.lock().unwrap().metrics().unwrap();
    assert!(m["rx_packets"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(m["tx_packets"], 1);
    assert_eq!(m["vmm_copied_bytes"], 0);
    assert!(m["backend"]["rx_discarded_inactive"].as_u64().unwrap() >= 1, "{m}");
    // Deleting the interface: link down, config interrupt, VM keeps going.
    if Command::new("ip").args(["link", "del", &name]).status().map(|s| s.success()).unwrap_or(false) {
        for _ in 0..5 {
            em.run_with_timeout(50).unwrap();
        }
        let n = net.lock().unwrap();
        assert!(!n.link_up());
        let mut s = [0u8; 2];
        n.read_config(CFG_STATUS as u64, &mut s);
        assert_eq!(s, [0, 0]);
        let m = n.metrics().unwrap();
        assert_eq!(m["link_down_events"], 1);
        // The dead tap fd is no longer watched (it would poll EPOLLERR
        // forever); the link-notification socket still is.
        assert_eq!(m["backend_fds"], serde_json::json!(["removed", "watched"]), "{m}");
    } else {
        skip("net_device_over_real_tap_end_to_end (link-down part)", "`ip link del` unavailable");
    }
}

/// 20 KB TCP GSO frames both ways: host -> guest lands unsegmented in many
/// mergeable buffers with its GSO header; guest -> host is accepted as one
/// GSO frame (HOST_TSO4).
#[test]
fn tap_gso_frames_both_ways() {
    if !taps_available("tap_gso_frames_both_ways") {
        return;
    }
    let name = unique_name();
    let mut tap = TapBackend::open(&name).unwrap();
    set_up(&name);
    let mem = guest_mem();
    tap.set_features(F_VERSION_1 | F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4 | F_HOST_TSO4 | F_CSUM).unwrap();
    // 50 x 1536 B >= a 64 KiB frame: the backend reads.
    for i in 0..50u16 {
        tap.post_rx(&mem, rx_buf(i, 0x10_0000 + 0x800 * u64::from(i), 1536)).unwrap();
    }
    let injector = HostEnd::new(&name).with_vnet_hdr();
    let f = tcp_frame(20_000, 1);
    let mut msg = gso_hdr().to_vec();
    msg.extend_from_slice(&f);
    injector.send(&msg);
    let total = VNET_HDR_LEN + f.len();
    let nbufs = total.div_ceil(1536);
    let used = pump_rx(&mut tap, &mem, nbufs);
    assert_eq!(used.len(), nbufs, "{}", tap.metrics());
    assert!(used[..nbufs - 1].iter().all(|u| u.len == 1536));
    assert_eq!(used[nbufs - 1].len as usize, total - 1536 * (nbufs - 1));
    let hdr = read(&mem, 0x10_0000, 12);
    assert_eq!(hdr[1], GSO_TCPV4, "gso_type");
    assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), MSS, "gso_size");
    assert_eq!(hdr[0] & HDR_F_NEEDS_CSUM, HDR_F_NEEDS_CSUM);
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]) as usize, nbufs, "num_buffers");
    let mut got = Vec::new();
    for (i, u) in used.iter().enumerate() {
        let start = if i == 0 { 12 } else { 0 };
        got.extend(read(&mem, 0x10_0000 + 0x800 * u64::from(u.head) + start, u.len as usize - start as usize));
    }
    assert_eq!(got, f);

    // Guest -> host: one 20 KB GSO frame, header + data in two segments.
    let host = HostEnd::new(&name);
    let g = tcp_frame(20_000, 2);
    let mut hdr12 = gso_hdr().to_vec();
    hdr12.extend_from_slice(&[0, 0]);
    mem.write_slice(&hdr12, GuestAddress(0x30_0000)).unwrap();
    mem.write_slice(&g, GuestAddress(0x31_0000)).unwrap();
    let frame = TxFrame {
        head: 0,
        segs: vec![(GuestAddress(0x30_0000), 12), (GuestAddress(0x31_0000), g.len() as u32)],
        len: (12 + g.len()) as u32,
    };
    assert_eq!(tap.send(&mem, frame), Ok(true), "{}", tap.metrics());
    let seen = host.recv_frame(|b| b.len() > 40 && b[12..14] == [0x08, 0x00] && b[23] == 6 && b[54] == g[54]);
    assert_eq!(seen.expect("GSO frame did not reach the host").len(), g.len());
}
