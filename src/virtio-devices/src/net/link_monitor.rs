//! Link-state change notifications from the kernel (rtnetlink, RTMGRP_LINK),
//! so a tap that is brought down or up is reflected in the guest's link
//! status at once, not only when a write fails.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An rtnetlink socket subscribed to link events. Readable whenever any
/// interface changes; the owner then re-reads the state it cares about.
#[derive(Debug)]
pub struct LinkMonitor {
    sock: OwnedFd,
}

impl LinkMonitor {
    pub fn new() -> io::Result<LinkMonitor> {
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let s = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `s` was just returned by socket(2) and nothing else owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: bind reads one sockaddr_nl of the given size from a live
        // local.
        let r = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkMonitor { sock })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Consumes all pending notifications; returns how many were read. An
    /// overrun (ENOBUFS) counts as a notification: events were lost, so the
    /// caller must re-read the state anyway.
    pub fn drain(&self) -> usize {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        for _ in 0..1024 {
            // SAFETY: recv writes at most buf.len() bytes into our buffer.
            let r = unsafe { libc::recv(self.fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if r >= 0 {
                n += 1;
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => n += 1,
                _ => break,
            }
        }
        n
    }
}
