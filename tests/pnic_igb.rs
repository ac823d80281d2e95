//! The 82576 through VFIO with the zero-copy shim, on real (QEMU-emulated)
//! hardware inside the testbed: frames sent on the wire must land at GPA + 12
//! of the posted buffers, and a frame sent through TX must reach the peer.
//!
//! Runs only inside the testbed (`SHIMVMM_TESTBED=1`, which also provides
//! `$SHIMVMM_PNIC`, the peer namespace and the e1000e on the same hub):
//!   cargo test -p shimvmm-tests --test pnic_igb --no-run
//!   tools/testbed run -- target/debug/deps/pnic_igb-<hash> --nocapture
//! Frames with exact payloads come from an AF_PACKET socket on the e1000e
//! (root namespace); the peer namespace pings and answers ARP.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::io::FromRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pnic::shim::{self, ShimBackend};
use pnic::PnicDriver;
use virtio_devices::net::backend::{NetBackend, RxBuffer, TxFrame, Used, VNET_HDR_LEN};
use virtio_devices::GuestMemory;
use vm_memory::{Bytes, FileOffset, GuestAddress};

/// The "guest" MAC the shim filters on (differs from the NIC's own).
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xc0, 0x02, 0x10];
const OUR_IP: [u8; 4] = [192, 0, 2, 10];
/// An unused MAC: frames to it must be filtered by the NIC.
const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x99, 0x99, 0x99];
/// Local experimental EtherType for the test frames.
const ETH_TEST: u16 = 0x88b5;
const LOW_RAM: usize = 32 << 20;
const HIGH_BASE: u64 = 1 << 32;
const HIGH_RAM: usize = 2 << 20;
const BUF_LEN: u32 = 1536;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (the testbed sets it)"))
}

/// Skip loudly outside the testbed, or fail when guests are required.
fn in_testbed() -> bool {
    if std::env::var("SHIMVMM_TESTBED").as_deref() == Ok("1") && std::env::var("SHIMVMM_PNIC").is_ok() {
        return true;
    }
    if std::env::var("SHIMVMM_REQUIRE_GUEST").as_deref() == Ok("1") {
        panic!("pnic_igb: SHIMVMM_REQUIRE_GUEST=1 but not inside the testbed (SHIMVMM_TESTBED/SHIMVMM_PNIC unset)");
    }
    eprintln!(
        "\n*** SKIPPED pnic_igb: needs the testbed's VFIO igb; run it with tools/testbed run -- <test binary> ***\n"
    );
    false
}

/// Guest RAM backed by a memfd, as the VMM allocates it: 32 MiB at 0 and
/// 2 MiB at 4 GiB (so IOVA = GPA is exercised above 32 bits too).
fn guest_ram() -> GuestMemory {
    let fd_for = |name: &str, size: usize| {
        let n = CString::new(name).unwrap();
        // SAFETY: memfd_create with a valid C string; the result is checked.
        let fd = unsafe { libc::memfd_create(n.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh descriptor we exclusively own.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(size as u64).unwrap();
        f
    };
    GuestMemory::from_ranges_with_files([
        (GuestAddress(0), LOW_RAM, Some(FileOffset::new(fd_for("low", LOW_RAM), 0))),
        (GuestAddress(HIGH_BASE), HIGH_RAM, Some(FileOffset::new(fd_for("high", HIGH_RAM), 0))),
    ])
    .expect("guest RAM")
}

/// A raw AF_PACKET socket on an interface of the root namespace.
struct RawSock {
    fd: libc::c_int,
    ifindex: libc::c_int,
}

impl RawSock {
    fn open(ifname: &str) -> RawSock {
        let c = CString::new(ifname).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as libc::c_int;
        assert!(ifindex > 0, "no interface {ifname}");
        // SAFETY: plain socket(2) call; result checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        RawSock { fd, ifindex }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sa are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(n, frame.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    }
}

impl Drop for RawSock {
    fn drop(&mut self) {
        // SAFETY: we own fd.
        unsafe { libc::close(self.fd) };
    }
}

fn test_frame(dst: [u8; 6], tag: &str, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0x00, 0xc0, 0x02, 0x03]);
    f[12..14].copy_from_slice(&ETH_TEST.to_be_bytes());
    f[14..14 + tag.len()].copy_from_slice(tag.as_bytes());
    for (i, b) in f[14 + tag.len()..].iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    f
}

fn rx_buf(head: u16, gpa: u64, len: u32) -> RxBuffer {
    RxBuffer { head, segs: vec![(GuestAddress(gpa), len)], len }
}

/// Poll the shim (interrupt fds as wakeups, as the VMM does) until `want`
/// used entries or the timeout.
fn reap_until<D: PnicDriver>(s: &mut ShimBackend<D>, mem: &GuestMemory, want: usize, timeout: Duration) -> Vec<Used> {
    let end = Instant::now() + timeout;
    let mut used = Vec::new();
    while used.len() < want && Instant::now() < end {
        for (i, fd) in s.event_fds().into_iter().enumerate() {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            if unsafe { libc::poll(&mut p, 1, 0) } == 1 {
                IRQS.fetch_add(1, Ordering::Relaxed);
            }
            s.process_event(mem, i);
        }
        s.reap_rx(mem, &mut used);
        std::thread::sleep(Duration::from_millis(5));
    }
    used
}

/// The e1000e test takes the e1000e away from the kernel, which the igb test
/// uses to send frames: the two run one after the other.
static NIC_LOCK: Mutex<()> = Mutex::new(());

/// MSI-X eventfd wakeups seen by `reap_until`.
static IRQS: AtomicUsize = AtomicUsize::new(0);

fn read(mem: &GuestMemory, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(gpa)).unwrap();
    v
}

fn peer(cmd: &str) -> std::process::Output {
    let ns = env("SHIMVMM_PEER_NS");
    Command::new("ip").args(["netns", "exec", &ns, "sh", "-c", cmd]).output().expect("ip netns exec")
}

fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f.resize(60, 0);
    f
}

fn ip_of(s: &str) -> [u8; 4] {
    let v: Vec<u8> = s.split('.').map(|x| x.parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3]]
}

#[test]
fn igb_shim_rx_lands_at_gpa_plus_12_and_tx_reaches_the_peer() {
    if !in_testbed() {
        return;
    }
    let _serial = NIC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let bdf = env("SHIMVMM_PNIC");
    let e1000e = env("SHIMVMM_E1000E_IF");
    let peer_ip = ip_of(&env("SHIMVMM_PEER_IP"));
    let peer_if = env("SHIMVMM_PEER_IF");
    let mem = guest_ram();

    let t = Instant::now();
    let mut s = shim::open_vfio(&bdf, &mem, Some(MAC)).unwrap_or_else(|e| panic!("open {bdf}: {e}"));
    eprintln!("pnic_igb: {bdf} up in {:?}, link {}", t.elapsed(), s.link_up());
    let link_end = Instant::now() + Duration::from_secs(10);
    while !s.driver_mut().link_up().unwrap() && Instant::now() < link_end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.driver_mut().link_up().unwrap(), "igb link did not come up");
    assert_eq!(s.event_fds().len(), 2, "two MSI-X vectors wired to eventfds");

    // --- RX, zero copy ----------------------------------------------------------
    // 24 buffers in low RAM, 8 above 4 GiB.
    let mut bufs: Vec<u64> = (0..24).map(|i| 0x10_0000 + i * 0x1000).collect();
    bufs.extend((0..8).map(|i| HIGH_BASE + 0x1000 + i * 0x1000));
    for (i, gpa) in bufs.iter().enumerate() {
        mem.write_slice(&[0xee; BUF_LEN as usize], GuestAddress(*gpa)).unwrap();
        s.post_rx(&mem, rx_buf(i as u16, *gpa, BUF_LEN)).unwrap();
    }
    assert_eq!(s.rx_posted(), 32);

    let sock = RawSock::open(&e1000e);
    // Not for us: must be filtered in the NIC, never DMAed.
    for i in 0..4 {
        sock.send(&test_frame(OTHER_MAC, &format!("not-for-us-{i}"), 100));
    }
    let sizes = [60usize, 64, 128, 500, 1000, 1514];
    let mut sent = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        let f = test_frame(MAC, &format!("shimvmm-pnic-{i}"), *len);
        sock.send(&f);
        sent.push(f);
    }
    let bcast = test_frame([0xff; 6], "shimvmm-bcast", 90);
    sock.send(&bcast);
    sent.push(bcast);

    // Other hosts on the hub (IPv6 RS/ND, ...) may add multicast frames: poll
    // until every test frame has been seen.
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = vec![false; sent.len()];
    let mut all_used = Vec::new();
    while seen.iter().any(|x| !x) && Instant::now() < end {
        let used = reap_until(&mut s, &mem, 1, Duration::from_millis(200));
        for u in used {
            let gpa = bufs[u.head as usize];
            assert!(u.len as usize > VNET_HDR_LEN, "used len {} for head {}", u.len, u.head);
            let hdr = read(&mem, gpa, VNET_HDR_LEN);
            assert_eq!(hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "virtio-net header at GPA {gpa:#x}");
            let frame = read(&mem, gpa + VNET_HDR_LEN as u64, u.len as usize - VNET_HDR_LEN);
            assert_ne!(&frame[..6], &OTHER_MAC, "the NIC's MAC filter let a foreign unicast through");
            if let Some(k) = sent.iter().position(|f| *f == frame) {
                eprintln!("pnic_igb: frame {k} ({} B) landed at GPA {gpa:#x}+12", frame.len());
                seen[k] = true;
            }
            // The NIC never wrote past the frame it reported.
            let tail = read(&mem, gpa + u.len as u64, (BUF_LEN - u.len) as usize);
            assert!(tail.iter().all(|b| *b == 0xee), "bytes after the frame changed in buffer at {gpa:#x}");
            // Give the buffer back, as a guest would.
            mem.write_slice(&[0xee; BUF_LEN as usize], GuestAddress(gpa)).unwrap();
            s.post_rx(&mem, rx_buf(u.head, gpa, BUF_LEN)).unwrap();
            all_used.push(u);
        }
    }
    assert!(seen.iter().all(|x| *x), "test frames not received: {seen:?} (got {} others)", all_used.len());
    assert!(IRQS.load(Ordering::Relaxed) > 0, "frames arrived but no MSI-X interrupt reached the eventfds");
    let m = s.shim_metrics().clone();
    assert!(m.rx_zero_copy >= sent.len() as u64, "{m:?}");
    assert_eq!(m.rx_copy_fallback.frames, 0);

    // --- the peer's own traffic: unicast ping to our MAC, broadcast ping --------
    let mac_s = MAC.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let out = peer(&format!(
        "ip neigh replace 192.0.2.10 lladdr {mac_s} dev {peer_if} nud permanent && ping -c 2 -i 0.3 -W 1 192.0.2.10; true"
    ));
    eprintln!("pnic_igb: peer ping: {}", String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or(""));
    let used = reap_until(&mut s, &mem, 2, Duration::from_secs(10));
    let mut echo = 0;
    for u in &used {
        let gpa = bufs[u.head as usize];
        let f = read(&mem, gpa + 12, u.len as usize - 12);
        // IPv4, ICMP echo request to 192.0.2.10.
        if f[..6] == MAC && f[12..14] == [8, 0] && f[23] == 1 && f[30..34] == OUR_IP && f[34] == 8 {
            echo += 1;
        }
        s.post_rx(&mem, rx_buf(u.head, gpa, BUF_LEN)).unwrap();
    }
    assert!(echo >= 1, "no ICMP echo request from the peer arrived ({} frames)", used.len());

    // --- TX: an ARP request for the peer; its reply comes back -------------------
    let arp = arp_request(MAC, OUR_IP, peer_ip);
    let (hdr_gpa, data_gpa) = (0x80_0000u64, 0x80_1002u64);
    mem.write_slice(&[0u8; 12], GuestAddress(hdr_gpa)).unwrap();
    mem.write_slice(&arp[..20], GuestAddress(hdr_gpa + 12)).unwrap();
    mem.write_slice(&arp[20..], GuestAddress(data_gpa)).unwrap();
    let frame = TxFrame {
        head: 77,
        segs: vec![(GuestAddress(hdr_gpa), 32), (GuestAddress(data_gpa), (arp.len() - 20) as u32)],
        len: 32 + (arp.len() - 20) as u32,
    };
    assert_eq!(s.send(&mem, frame), Ok(false));
    let end = Instant::now() + Duration::from_secs(5);
    let mut tx_used = Vec::new();
    while tx_used.is_empty() && Instant::now() < end {
        s.reap_tx(&mut tx_used);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(tx_used, vec![Used { head: 77, len: 0 }], "TX did not complete");
    let end = Instant::now() + Duration::from_secs(10);
    let mut reply = false;
    while !reply && Instant::now() < end {
        for u in reap_until(&mut s, &mem, 1, Duration::from_millis(200)) {
            let gpa = bufs[u.head as usize];
            let f = read(&mem, gpa + 12, u.len as usize - 12);
            if f[..6] == MAC
                && f[12..14] == [8, 6]
                && f[20..22] == [0, 2]
                && f[28..32] == peer_ip
                && f[38..42] == OUR_IP
            {
                reply = true;
            }
            s.post_rx(&mem, rx_buf(u.head, gpa, BUF_LEN)).unwrap();
        }
    }
    assert!(reply, "the peer did not answer the ARP request sent through the NIC");
    assert!(s.shim_metrics().tx_zero_copy >= 1);

    // --- copy fallback: chained buffers --------------------------------------------
    s.quiesce();
    let chained: Vec<(u64, u64)> = (0..4).map(|i| (0x90_0000 + i * 0x1000, 0xa0_0000 + i * 0x1000)).collect();
    for (i, (h, d)) in chained.iter().enumerate() {
        let b =
            RxBuffer { head: 100 + i as u16, segs: vec![(GuestAddress(*h), 12), (GuestAddress(*d), 1518)], len: 1530 };
        s.post_rx(&mem, b).unwrap();
    }
    let f = test_frame(MAC, "shimvmm-fallback", 700);
    sock.send(&f);
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = false;
    while !got && Instant::now() < end {
        for u in reap_until(&mut s, &mem, 1, Duration::from_millis(200)) {
            let (h, d) = chained[(u.head - 100) as usize];
            let data = read(&mem, d, u.len as usize - 12);
            if data == f {
                assert_eq!(read(&mem, h, 12)[10], 1);
                got = true;
            }
        }
    }
    assert!(got, "fallback frame not delivered");
    let m = s.shim_metrics();
    assert!(m.rx_copy_fallback.frames >= 1 && m.rx_copy_fallback.bytes >= 700, "{m:?}");

    // --- after quiesce nothing lands in buffers that were posted -------------------
    s.post_rx(&mem, rx_buf(200, 0xb0_0000, BUF_LEN)).unwrap();
    s.quiesce();
    mem.write_slice(&[0x5a; BUF_LEN as usize], GuestAddress(0xb0_0000)).unwrap();
    for (h, d) in &chained {
        mem.write_slice(&[0x5a; 12], GuestAddress(*h)).unwrap();
        mem.write_slice(&[0x5a; 1518], GuestAddress(*d)).unwrap();
    }
    for i in 0..4 {
        sock.send(&test_frame(MAC, &format!("after-quiesce-{i}"), 200));
        sock.send(&test_frame([0xff; 6], &format!("after-quiesce-b{i}"), 200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(read(&mem, 0xb0_0000, BUF_LEN as usize).iter().all(|b| *b == 0x5a), "DMA after quiesce");
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert!(used.is_empty());
    eprintln!("pnic_igb: {} MSI-X wakeups; metrics {}", IRQS.load(Ordering::Relaxed), s.metrics());
}

#[test]
fn open_rejects_a_malformed_bdf_with_a_clear_error() {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let e = shim::open_vfio("01:00", &mem, Some(MAC)).err().expect("must fail").to_string();
    assert!(e.contains("invalid PCI address") && e.contains("01:00"), "{e}");
    let e = shim::open_vfio("0000:7f:1f.7", &mem, Some(MAC)).err().expect("must fail").to_string();
    assert!(e.contains("not found in /sys/bus/pci/devices"), "{e}");
}

/// Rebinds a PCI function to vfio-pci and gives it back to its kernel driver
/// (with its address) when dropped, even after a failed assertion.
struct VfioBinding {
    bdf: String,
    ifname: String,
    ip: String,
}

fn sysfs_write(path: &str, value: &str) {
    std::fs::write(path, value).unwrap_or_else(|e| panic!("write {value:?} to {path}: {e}"));
}

impl VfioBinding {
    fn take(ifname: &str, ip: &str) -> VfioBinding {
        let dev = std::fs::read_link(format!("/sys/class/net/{ifname}/device")).expect("netdev's PCI device");
        let bdf = dev.file_name().unwrap().to_string_lossy().into_owned();
        sysfs_write(&format!("/sys/bus/pci/devices/{bdf}/driver_override"), "vfio-pci");
        sysfs_write(&format!("/sys/bus/pci/devices/{bdf}/driver/unbind"), &bdf);
        sysfs_write("/sys/bus/pci/drivers_probe", &bdf);
        let drv = std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/driver")).expect("bound driver");
        assert!(drv.ends_with("vfio-pci"), "{bdf} bound to {drv:?}, not vfio-pci");
        VfioBinding { bdf, ifname: ifname.into(), ip: ip.into() }
    }
}

impl Drop for VfioBinding {
    fn drop(&mut self) {
        let b = &self.bdf;
        let _ = std::fs::write(format!("/sys/bus/pci/devices/{b}/driver_override"), "\n");
        let _ = std::fs::write(format!("/sys/bus/pci/devices/{b}/driver/unbind"), b);
        let _ = std::fs::write("/sys/bus/pci/drivers_probe", b);
        // The kernel may give the new netdev another ethN name: find it and
        // rename it back, then restore the address and wait for carrier.
        let end = Instant::now() + Duration::from_secs(10);
        let mut name = None;
        while name.is_none() && Instant::now() < end {
            name = std::fs::read_dir(format!("/sys/bus/pci/devices/{b}/net"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned());
            if name.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let Some(name) = name else {
            eprintln!("pnic_igb: {b} did not come back as a netdev");
            return;
        };
        let ip = |args: &[&str]| {
            let _ = Command::new("ip").args(args).status();
        };
        if name != self.ifname {
            ip(&["link", "set", &name, "name", &self.ifname]);
        }
        ip(&["addr", "replace", &format!("{}/24", self.ip), "dev", &self.ifname]);
        ip(&["link", "set", &self.ifname, "up"]);
        let carrier = format!("/sys/class/net/{}/carrier", self.ifname);
        let end = Instant::now() + Duration::from_secs(15);
        while std::fs::read_to_string(&carrier).map(|c| c.trim() != "1").unwrap_or(true) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn e1000e_shim_exchanges_frames_with_the_peer() {
    if !in_testbed() {
        return;
    }
    let _serial = NIC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let peer_ip = ip_of(&env("SHIMVMM_PEER_IP"));
    let peer_if = env("SHIMVMM_PEER_IF");
    let binding = VfioBinding::take(&env("SHIMVMM_E1000E_IF"), &env("SHIMVMM_LOCAL_IP"));
    let mem = guest_ram();
    let mac = [0x52, 0x54, 0x00, 0xc0, 0x02, 0x20];
    let our_ip = [192, 0, 2, 20];
    let mut s = shim::open_vfio(&binding.bdf, &mem, Some(mac)).unwrap_or_else(|e| panic!("open {}: {e}", binding.bdf));
    assert_eq!(s.driver().name(), "e1000e");
    let end = Instant::now() + Duration::from_secs(10);
    while !s.driver_mut().link_up().unwrap() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.driver_mut().link_up().unwrap(), "e1000e link did not come up");
    let bufs: Vec<u64> = (0..32).map(|i| 0x20_0000 + i * 0x1000).collect();
    for (i, gpa) in bufs.iter().enumerate() {
        s.post_rx(&mem, rx_buf(i as u16, *gpa, BUF_LEN)).unwrap();
    }
    // TX: ARP request for the peer, header and frame in one segment.
    let arp = arp_request(mac, our_ip, peer_ip);
    mem.write_slice(&[0u8; 12], GuestAddress(0x80_0000)).unwrap();
    mem.write_slice(&arp, GuestAddress(0x80_000c)).unwrap();
    let len = 12 + arp.len() as u32;
    assert_eq!(s.send(&mem, TxFrame { head: 5, segs: vec![(GuestAddress(0x80_0000), len)], len }), Ok(false));
    // RX: the peer's ARP reply and its unicast pings.
    let mac_s = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let out = peer(&format!(
        "ip neigh replace 192.0.2.20 lladdr {mac_s} dev {peer_if} nud permanent && ping -c 2 -i 0.3 -W 1 192.0.2.20; true"
    ));
    assert!(out.status.success());
    let (mut reply, mut echo) = (false, false);
    let end = Instant::now() + Duration::from_secs(15);
    while !(reply && echo) && Instant::now() < end {
        for u in reap_until(&mut s, &mem, 1, Duration::from_millis(200)) {
            let gpa = bufs[u.head as usize];
            assert_eq!(read(&mem, gpa, 12), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
            let f = read(&mem, gpa + 12, u.len as usize - 12);
            if f[..6] == mac && f[12..14] == [8, 6] && f[20..22] == [0, 2] && f[28..32] == peer_ip {
                reply = true;
            }
            if f[..6] == mac && f[12..14] == [8, 0] && f[23] == 1 && f[30..34] == our_ip && f[34] == 8 {
                echo = true;
            }
            s.post_rx(&mem, rx_buf(u.head, gpa, BUF_LEN)).unwrap();
        }
    }
    let mut tx_used = Vec::new();
    s.reap_tx(&mut tx_used);
    assert_eq!(tx_used, vec![Used { head: 5, len: 0 }], "TX did not complete");
    assert!(reply, "no ARP reply from the peer through the e1000e");
    assert!(echo, "no ICMP echo request from the peer through the e1000e");
    let m = s.shim_metrics();
    assert!(m.rx_zero_copy >= 2 && m.tx_zero_copy == 1, "{m:?}");
    // Quiesce then restart works on this family too.
    s.quiesce();
    s.post_rx(&mem, rx_buf(0, bufs[0], BUF_LEN)).unwrap();
    eprintln!("pnic_igb: e1000e {} IRQs; metrics {}", IRQS.load(Ordering::Relaxed), s.metrics());
    drop(s);
}
