//! Creating the API's Unix socket: owner-only from the first moment, a stale
//! file replaced, a live server never stolen from.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::error::ApiError;

/// `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_LEN: usize = 107;
/// Only the owner may talk to the VMM.
pub const SOCKET_MODE: u32 = 0o600;
/// Pending connections the kernel queues before accept.
const LISTEN_BACKLOG: libc::c_int = 128;

/// Identity of the socket file we created, so we only ever delete our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketId {
    dev: u64,
    ino: u64,
    // tmpfs reuses inode numbers at once; the change time tells files apart.
    ctime: i64,
    ctime_nsec: i64,
}

impl SocketId {
    pub(crate) fn of(path: &Path) -> Option<SocketId> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(SocketId { dev: meta.dev(), ino: meta.ino(), ctime: meta.ctime(), ctime_nsec: meta.ctime_nsec() })
    }
}

/// Remove a leftover socket nobody listens on; refuse anything else.
fn clear_stale(path: &Path) -> Result<(), ApiError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ApiError::Probe { path: path.to_owned(), source }),
    };
    if !meta.file_type().is_socket() {
        return Err(ApiError::NotASocket { path: path.to_owned() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ApiError::SocketInUse { path: path.to_owned() }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|source| ApiError::RemoveStale { path: path.to_owned(), source })
        }
        Err(source) => Err(ApiError::Probe { path: path.to_owned(), source }),
    }
}

/// Bind and listen on `path` with mode 0600.
///
/// The mode is set between bind() and listen(): until listen() every connect
/// is refused, so no other user can slip in while the file still has the
/// umask's mode. std's `UnixListener::bind` does both at once, hence libc.
pub(crate) fn bind_api_socket(path: &Path) -> Result<(UnixListener, SocketId), ApiError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(ApiError::EmptySocketPath);
    }
    if bytes.len() > MAX_SOCKET_PATH_LEN {
        return Err(ApiError::SocketPathTooLong { path: path.to_owned(), len: bytes.len() });
    }
    let bind_err = |source| ApiError::Bind { path: path.to_owned(), source };
    if bytes.contains(&0) {
        return Err(bind_err(std::io::Error::new(ErrorKind::InvalidInput, "the path contains a NUL byte")));
    }
    clear_stale(path)?;

    // SAFETY: socket() takes no pointers; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(bind_err(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    // The file bind() creates takes the socket inode's mode (less the umask):
    // owner-only from the moment it appears, and listen() follows bind() at
    // once. Between the two a client that saw the file is refused
    // (ECONNREFUSED), as with Firecracker's bind+listen; clients retry.
    // SAFETY: `fd` is an open socket; fchmod takes no pointers.
    if unsafe { libc::fchmod(fd.as_raw_fd(), SOCKET_MODE as libc::mode_t) } < 0 {
        return Err(bind_err(std::io::Error::last_os_error()));
    }

    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // The length check above leaves room for the NUL that zeroed() put there.
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let addr_len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `addr` is a valid, NUL-terminated sockaddr_un and `addr_len`
    // does not exceed its size; `fd` is an open socket.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(addr).cast(), addr_len) };
    if rc < 0 {
        return Err(bind_err(std::io::Error::last_os_error()));
    }
    let cleanup = |e: std::io::Error| {
        let _ = std::fs::remove_file(path);
        bind_err(e)
    };
    // SAFETY: `fd` is a bound socket; listen() takes no pointers.
    if unsafe { libc::listen(fd.as_raw_fd(), LISTEN_BACKLOG) } < 0 {
        return Err(cleanup(std::io::Error::last_os_error()));
    }
    // The mode again, should the inode's mode not have carried over.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(cleanup)?;
    // Taken after chmod, which changes ctime.
    let id = SocketId::of(path)
        .ok_or_else(|| cleanup(std::io::Error::new(ErrorKind::NotFound, "socket file vanished after bind")))?;
    Ok((UnixListener::from(fd), id))
}

/// Delete the socket file if it is still the one we created.
pub(crate) fn remove_own_socket(path: &Path, id: SocketId) {
    if SocketId::of(path) == Some(id) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("api-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn socket_is_owner_only_and_accepts() {
        let p = tmp("a.sock");
        let (listener, id) = bind_api_socket(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        let _client = UnixStream::connect(&p).unwrap();
        assert!(listener.accept().is_ok());
        remove_own_socket(&p, id);
        assert!(!p.exists());
    }

    #[test]
    fn live_socket_is_refused_stale_one_replaced() {
        let p = tmp("b.sock");
        let (live, _) = bind_api_socket(&p).unwrap();
        let e = bind_api_socket(&p).unwrap_err();
        assert!(matches!(e, ApiError::SocketInUse { .. }), "{e}");
        drop(live); // The file stays, nobody listens: stale.
        assert!(p.exists());
        let (_again, _) = bind_api_socket(&p).unwrap();
    }

    #[test]
    fn regular_file_and_bad_paths_are_refused() {
        let p = tmp("c.sock");
        std::fs::write(&p, b"precious").unwrap();
        assert!(matches!(bind_api_socket(&p).unwrap_err(), ApiError::NotASocket { .. }));
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
        let long = std::path::PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        assert!(bind_api_socket(&long).unwrap_err().to_string().contains("at most 107"));
        assert!(matches!(bind_api_socket(Path::new("")).unwrap_err(), ApiError::EmptySocketPath));
        let e = bind_api_socket(Path::new("/nonexistent-dir/x.sock")).unwrap_err().to_string();
        assert!(e.starts_with("cannot create API socket /nonexistent-dir/x.sock:"), "{e}");
    }

    #[test]
    fn only_our_own_file_is_removed() {
        let p = tmp("d.sock");
        let (l, id) = bind_api_socket(&p).unwrap();
        drop(l);
        std::fs::remove_file(&p).unwrap();
        let (_l2, _) = bind_api_socket(&p).unwrap();
        remove_own_socket(&p, id); // stale id: someone else's socket now
        assert!(p.exists());
    }
}
