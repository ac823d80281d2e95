//! The stack against a real Linux TCP/IP client: the host kernel plays the
//! guest through a tap (its frames to the tap are the guest's TX, the
//! stack's frames written to the tap its RX), and `curl` makes the
//! requests. Needs root and /dev/net/tun (else it says SKIPPED), and curl.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mmds::{Mmds, MmdsStack, MmdsVersion};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

fn open_tap(name: &str) -> Option<std::fs::File> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").ok()?;
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    req[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes one struct ifreq (40 bytes) we own.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, req.as_mut_ptr()) };
    (rc == 0).then_some(f)
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).status().is_ok_and(|s| s.success())
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-s", "-m", "10", "-w", "\n%{http_code}"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn linux_client_gets_a_token_and_reads_under_v2() {
    let name = format!("mmdst{}", std::process::id() % 10_000);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(tap) = root.then(|| open_tap(&name)).flatten() else {
        eprintln!("*** SKIPPED linux_client_gets_a_token_and_reads_under_v2: needs root and /dev/net/tun ***");
        return;
    };
    if !sh(&["curl", "--version"]) {
        eprintln!("*** SKIPPED linux_client_gets_a_token_and_reads_under_v2: no curl ***");
        return;
    }
    // The host is the "guest": its address on the tap, MMDS routed there.
    assert!(sh(&["ip", "addr", "add", "192.0.2.230/32", "dev", &name]));
    assert!(sh(&["ip", "link", "set", &name, "up"]));
    assert!(sh(&["ip", "route", "add", "169.254.169.254/32", "dev", &name]));

    let store = Arc::new(Mutex::new(Mmds::default()));
    {
        let mut m = store.lock().unwrap();
        m.set_version(MmdsVersion::V2);
        m.put(serde_json::json!({"latest": {"meta-data": {"placement": {"zone": "z-1"}}}})).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pump = {
        let (store, stop) = (store.clone(), stop.clone());
        // SAFETY: a second owner of the tap's fd for the pump thread; `tap`
        // outlives it (joined below) and only this one is read from.
        let mut rx = unsafe { std::fs::File::from_raw_fd(libc::dup(tap.as_raw_fd())) };
        let mut tx = tap;
        std::thread::spawn(move || {
            let mut stack = MmdsStack::new(store, Ipv4Addr::new(169, 254, 169, 254));
            let mut buf = vec![0u8; 65536];
            let mut p = libc::pollfd { fd: rx.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: one pollfd we own; 50 ms timeout.
                if unsafe { libc::poll(&mut p, 1, 50) } > 0 {
                    let n = rx.read(&mut buf).unwrap();
                    if stack.wants(&buf[..n]) {
                        stack.receive(buf[..n].to_vec());
                    }
                }
                stack.poll();
                while let Some(f) = stack.pop_frame() {
                    tx.write_all(&f).unwrap();
                }
            }
            stack.stats()
        })
    };

    let (token, code) =
        curl(&["-X", "PUT", "-H", "X-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token"]);
    assert_eq!((code.as_str(), token.len()), ("200", 64), "token: {token:?}");
    let hdr = format!("X-metadata-token: {token}");
    let (zone, code) = curl(&["-H", &hdr, "http://169.254.169.254/latest/meta-data/placement/zone"]);
    assert_eq!((code.as_str(), zone.as_str()), ("200", "z-1"));
    let (_, code) = curl(&["http://169.254.169.254/latest/meta-data/placement/zone"]);
    assert_eq!(code, "401", "a V1 request under V2");
    // HTTP/1.0, MMDS closes first, many times over (more than its sockets).
    for i in 0..20 {
        let (keys, code) = curl(&["-0", "-H", &hdr, "http://169.254.169.254/latest/meta-data/"]);
        assert_eq!((code.as_str(), keys.as_str()), ("200", "placement/"), "request {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let stats = pump.join().unwrap();
    // (The tap went with its last fd.)
    eprintln!("stack: {stats:?}");
    assert_eq!((stats.tokens_issued, stats.requests_unauthorized), (1, 1));
}
