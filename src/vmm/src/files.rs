//! Opening the files a user names (kernel, initrd, disk images) without
//! following a symlink and without hanging on a FIFO, and writing the
//! metrics file through a fresh temporary file.
//!
//! Inputs are opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO opens at once
//! instead of waiting for a writer) and checked on the open descriptor with
//! fstat, so what is checked is what is read: a regular file, or a block
//! device only where the caller allows it (`--allow-block-devices`).
//! `O_NOFOLLOW` covers the last path component; confining the directories
//! above it is the jailer's job (docs/security.md).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use virtio_devices::files::{kind_of, open_nofollow, set_blocking};

/// Opens `path` for reading (and writing when `write`) without following a
/// symlink at its end and without blocking, then checks on the descriptor
/// that it is a regular file (or a block device when `allow_block`). The
/// returned file is back in blocking mode. Errors say what is wrong in words.
pub fn open_input(path: &Path, write: bool, allow_block: bool) -> io::Result<File> {
    let file = open_nofollow(path, write).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symbolic link, which shimvmm does not follow: give the path of the file itself",
        ),
        // O_NONBLOCK|O_WRONLY on a FIFO with no reader.
        Some(libc::ENXIO) => io::Error::new(io::ErrorKind::InvalidInput, "is a FIFO or socket, not a regular file"),
        _ => e,
    })?;
    let ft = file.metadata()?.file_type();
    if !(ft.is_file() || (allow_block && ft.is_block_device())) {
        let also = if ft.is_block_device() { " (block devices need --allow-block-devices)" } else { "" };
        let what = if allow_block { "a regular file or block device" } else { "a regular file" };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is a {}, not {what}{also}", kind_of(ft))));
    }
    set_blocking(&file)?;
    Ok(file)
}

/// How many fresh temporary names [`write_atomic`] tries before giving up.
const TEMP_ATTEMPTS: usize = 8;

fn random_suffix() -> u64 {
    let mut v = [0u8; 8];
    // SAFETY: getrandom writes at most v.len() bytes into the buffer we own.
    let n = unsafe { libc::getrandom(v.as_mut_ptr() as *mut libc::c_void, v.len(), 0) };
    if n != v.len() as isize {
        // Never a fixed name: fall back to the clock and the pid.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    }
    u64::from_ne_bytes(v)
}

/// A temporary name next to `path`: `.NAME.RANDOM.tmp` in the same directory
/// (so the rename stays on one file system).
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{:016x}.tmp", random_suffix()))
}

/// Writes `bytes` to `path` atomically: into a new file created with
/// `O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK` (so nothing already there, a
/// symlink or a FIFO, is ever opened) under a random name in the same
/// directory, then renamed over `path` (which replaces whatever `path` is
/// without opening it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, temp_name)
}

fn write_atomic_with(path: &Path, bytes: &[u8], mut name: impl FnMut(&Path) -> PathBuf) -> io::Result<()> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = name(path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&tmp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = Some(tmp);
                continue;
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create {}: {e}", tmp.display()))),
        };
        let done = file.write_all(bytes).and_then(|()| std::fs::rename(&tmp, path));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return done;
    }
    let last = last.map(|p| p.display().to_string()).unwrap_or_default();
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no fresh temporary file name next to it after {TEMP_ATTEMPTS} tries (last: {last} exists)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shimvmm-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn inputs_refuse_symlinks_fifos_and_block_devices_without_hanging() {
        let d = tmpdir("inputs");
        let file = d.join("kernel");
        std::fs::write(&file, b"x").unwrap();
        let link = d.join("link");
        symlink(&file, &link).unwrap();
        let fifo = d.join("fifo");
        mkfifo(&fifo);
        let t = Instant::now();
        assert!(open_input(&file, false, false).is_ok());
        assert!(open_input(&file, true, false).is_ok());
        let e = open_input(&link, false, false).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        for write in [false, true] {
            let e = open_input(&fifo, write, true).unwrap_err().to_string();
            assert!(e.contains("FIFO"), "{e}");
        }
        let e = open_input(&d, false, false).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "no open may block");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn metrics_write_is_atomic_and_never_opens_what_is_at_the_temp_path() {
        let d = tmpdir("metrics");
        let target = d.join("metrics.json");
        write_atomic(&target, b"{}").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
        // A symlink planted at the temporary name (to a file we must not
        // touch) and a FIFO there: neither is opened; the error is one line.
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let planted = d.join(".metrics.json.planted.tmp");
        for plant in ["symlink", "fifo"] {
            let _ = std::fs::remove_file(&planted);
            if plant == "symlink" {
                symlink(&victim, &planted).unwrap();
            } else {
                mkfifo(&planted);
            }
            let t = Instant::now();
            let e = write_atomic_with(&target, b"{\"x\":1}", |_| planted.clone()).unwrap_err().to_string();
            assert!(t.elapsed() < Duration::from_secs(5), "{plant}: no hang");
            assert!(e.contains("no fresh temporary file name") && e.contains(".metrics.json.planted.tmp"), "{e}");
            assert!(!e.contains('\n'), "{e}");
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep", "{plant}");
            assert_eq!(std::fs::read(&target).unwrap(), b"{}", "{plant}: old metrics kept");
        }
        // A FIFO or symlink *at the metrics path* is replaced, not opened.
        std::fs::remove_file(&target).unwrap();
        mkfifo(&target);
        write_atomic(&target, b"{}").unwrap();
        assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
        // Random names: no two alike, all hidden next to the target.
        let a = temp_name(&target);
        assert_ne!(a, temp_name(&target));
        assert_eq!(a.parent(), target.parent());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
