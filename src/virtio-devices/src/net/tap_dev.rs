//! A Linux tap device opened with a virtio-net header (`/dev/net/tun`,
//! IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, header size 12, non-blocking).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

use super::backend::VNET_HDR_LEN;

/// The tun/tap control device.
pub const TUN_PATH: &str = "/dev/net/tun";
/// Longest interface name (IFNAMSIZ minus the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;
/// TUNSETIFF flags: an Ethernet tap, no packet-info prefix, with a virtio-net
/// header in front of every frame.
pub const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid tap name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot open {TUN_PATH}: {0} (is the tun module loaded, and do we have CAP_NET_ADMIN?)")]
    OpenTun(#[source] io::Error),
    #[error("cannot create or attach tap {name}: {source}{hint}")]
    Attach { name: String, source: io::Error, hint: &'static str },
    #[error("tap {name}: cannot set the virtio-net header size to {VNET_HDR_LEN} (TUNSETVNETHDRSZ): {source}")]
    VnetHdrSize { name: String, source: io::Error },
    #[error("tap {name}: cannot set offloads {flags:#x} (TUNSETOFFLOAD): {source}")]
    Offload { name: String, flags: u32, source: io::Error },
    #[error("tap {name}: cannot set its MTU to {mtu} (SIOCSIFMTU; needs CAP_NET_ADMIN): {source}")]
    Mtu { name: String, mtu: u16, source: io::Error },
}

/// Checks a name the way the kernel's dev_valid_name() does. A `%d` is allowed
/// (the kernel then picks the number).
pub fn validate_name(name: &str) -> Result<(), TapError> {
    let bad = |reason| Err(TapError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not interface names");
    }
    if name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()) {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers,
    // sockaddrs and pointers); all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
        *d = s as libc::c_char;
    }
    ifr
}

fn name_of(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn errno_result(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An open tap queue.
#[derive(Debug)]
pub struct TapDev {
    file: File,
    name: String,
}

impl TapDev {
    /// Creates the tap `name` (or attaches to an existing one).
    pub fn open(name: &str) -> Result<TapDev, TapError> {
        validate_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(TapError::OpenTun)?;
        let mut ifr = ifreq_for(name);
        ifr.ifr_ifru.ifru_flags = TAP_FLAGS as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which we own and which
        // lives across the call; the fd is a tun control fd.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) };
        if let Err(source) = errno_result(r) {
            let hint = match source.raw_os_error() {
                Some(libc::EBUSY) => " (another process has it open)",
                Some(libc::EPERM) => " (needs CAP_NET_ADMIN, or to be the tap's owner)",
                Some(libc::EINVAL) => " (an interface with this name exists but is not a single-queue tap)",
                _ => "",
            };
            return Err(TapError::Attach { name: name.to_string(), source, hint });
        }
        let tap = TapDev { name: name_of(&ifr), file };
        let hdr: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one c_int from the pointer, which
        // points at a live local.
        let r = unsafe { libc::ioctl(tap.fd(), libc::TUNSETVNETHDRSZ, &hdr as *const libc::c_int) };
        errno_result(r).map_err(|source| TapError::VnetHdrSize { name: tap.name.clone(), source })?;
        tap.set_offload(0)?;
        Ok(tap)
    }

    /// The interface name the kernel gave (differs from the request for `%d`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// TUNSETOFFLOAD: which offloads (TUN_F_*) the reader (the guest) handles,
    /// i.e. what the kernel may leave undone in frames it gives us.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is
        // accessed.
        let r = unsafe { libc::ioctl(self.fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) };
        errno_result(r).map(|_| ()).map_err(|source| TapError::Offload { name: self.name.clone(), flags, source })
    }

    /// Set the interface MTU (SIOCSIFMTU): the host end then sends the
    /// guest frames up to it and takes frames up to it.
    pub fn set_mtu(&self, mtu: u16) -> Result<(), TapError> {
        self.if_ioctl_with(libc::SIOCSIFMTU, |ifr| ifr.ifr_ifru.ifru_mtu = libc::c_int::from(mtu))
            .map(|_| ())
            .map_err(|source| TapError::Mtu { name: self.name.clone(), mtu, source })
    }

    /// Runs an interface ioctl (SIOCGIF*) on a throwaway socket.
    fn if_ioctl(&self, req: libc::c_ulong) -> io::Result<libc::ifreq> {
        self.if_ioctl_with(req, |_| {})
    }

    /// Runs an interface ioctl on a throwaway socket with the ifreq that
    /// `fill` completed (SIOCSIF*).
    fn if_ioctl_with(&self, req: libc::c_ulong, fill: impl FnOnce(&mut libc::ifreq)) -> io::Result<libc::ifreq> {
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let s = errno_result(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `s` was just returned by socket(2) and nothing else owns it.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
        let mut ifr = ifreq_for(&self.name);
        fill(&mut ifr);
        // SAFETY: the SIOCGIF*/SIOCSIFMTU requests used here read and write
        // one ifreq that we own. `as _`: ioctl's request is c_ulong on glibc,
        // c_int on musl, so the same line builds for both targets.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, &mut ifr as *mut libc::ifreq) };
        errno_result(r)?;
        Ok(ifr)
    }

    /// The interface MTU (SIOCGIFMTU).
    pub fn mtu(&self) -> io::Result<u32> {
        let ifr = self.if_ioctl(libc::SIOCGIFMTU)?;
        // SAFETY: SIOCGIFMTU filled the ifru_mtu member of the union.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
        Ok(mtu.max(0) as u32)
    }

    /// Whether the interface is administratively up (IFF_UP). A tap that is
    /// down refuses writes (EIO) and never receives.
    pub fn admin_up(&self) -> io::Result<bool> {
        let ifr = self.if_ioctl(libc::SIOCGIFFLAGS)?;
        // SAFETY: SIOCGIFFLAGS filled the ifru_flags member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        Ok(flags & libc::IFF_UP as libc::c_short != 0)
    }

    /// readv(2) of one frame (header included) into `iov`. A frame longer
    /// than the iovecs is silently truncated and the copied length returned,
    /// so callers that must notice add a spare trailing iovec.
    ///
    /// # Safety
    /// Every iovec must describe memory that is valid for writes for the whole
    /// call (here: mapped guest RAM, kept alive by the caller).
    pub unsafe fn readv(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: the caller guarantees the iovecs; the count is bounded by
        // the slice length (the caller keeps it <= IOV_MAX).
        let n = unsafe { libc::readv(self.fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// writev(2) of one frame (header included) from `iov`.
    ///
    /// # Safety
    /// Every iovec must describe memory valid for reads for the whole call.
    pub unsafe fn writev(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: as for readv; the kernel only reads the described memory.
        let n = unsafe { libc::writev(self.fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Takes one frame off the tap and drops it. A small buffer is enough: the
    /// tap dequeues the whole frame whatever the buffer size.
    pub fn read_discard(&self) -> io::Result<usize> {
        let mut scratch = [0u8; 64];
        // SAFETY: read(2) writes at most scratch.len() bytes into our buffer.
        let n = unsafe { libc::read(self.fd(), scratch.as_mut_ptr().cast(), scratch.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for TapDev {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("tap0").is_ok());
        assert!(validate_name("tap%d").is_ok());
        assert!(validate_name("abcdefghijklmno").is_ok());
        for bad in ["", "abcdefghijklmnop", "a/b", "a b", "a:b", ".", ".."] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid tap name"), "{e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(name_of(&ifreq_for("tap7")), "tap7");
    }
}
