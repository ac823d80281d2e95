//! The raw disk image behind a virtio-blk device, and the zero-copy transfers
//! between it and guest memory (preadv/pwritev straight into/out of the guest's
//! mapped RAM; no bounce buffer).

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use vm_memory::bitmap::Bitmap;
use vm_memory::GuestMemoryBackend;

use super::request::Segment;
use crate::GuestMemory;

/// Most iovecs one preadv/pwritev takes (Linux UIO_MAXIOV).
const IOV_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Disk to guest memory (VIRTIO_BLK_T_IN).
    ToGuest,
    /// Guest memory to disk (VIRTIO_BLK_T_OUT).
    FromGuest,
}

/// virtio-blk addresses the disk in 512-byte sectors, whatever blk_size says.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the id string returned by VIRTIO_BLK_T_GET_ID.
pub const ID_BYTES: usize = 20;

/// What the VMM asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    /// Raw image file or host block device.
    pub path: PathBuf,
    /// Offer VIRTIO_BLK_F_RO and refuse writes.
    pub read_only: bool,
    /// Serial returned by VIRTIO_BLK_T_GET_ID (at most 20 bytes; Linux shows it
    /// in /sys/block/vdX/serial).
    pub id: String,
    /// Accept a host block device at `path` (off: regular files only).
    pub allow_block_device: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk image {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot stat disk image {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("disk image {path} is a {kind}, not a regular file or block device")]
    NotAFileOrBlockDevice { path: PathBuf, kind: &'static str },
    #[error("disk image {path} is a symbolic link, which shimvmm does not follow: give the path of the image itself")]
    Symlink { path: PathBuf },
    #[error("disk image {path} is a host block device: allowed only with --allow-block-devices")]
    BlockDeviceNotAllowed { path: PathBuf },
    #[error("cannot open disk image {path} {mode}: {source}{hint}")]
    Open { path: PathBuf, mode: &'static str, source: io::Error, hint: &'static str },
    #[error("cannot get the size of disk image {path}: {source}")]
    Size { path: PathBuf, source: io::Error },
    #[error("block device id {id:?} is {len} bytes; at most 20 are allowed")]
    IdTooLong { id: String, len: usize },
    #[error("cannot create the block queue eventfd: {0}")]
    EventFd(io::Error),
}

/// An opened, size-checked disk image.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    /// Capacity in sectors; a partial last sector is not exposed.
    sectors: u64,
    read_only: bool,
}

impl Disk {
    /// Opens a regular image file (no block device); see [`Disk::open_with`].
    pub fn open(path: &Path, read_only: bool) -> Result<Disk, BlockError> {
        Disk::open_with(path, read_only, false)
    }

    /// Opens `path` without following a symlink at its end and without
    /// blocking (a FIFO fails at once), then checks on the open descriptor
    /// that it is a regular file, or a block device when `allow_block`.
    pub fn open_with(path: &Path, read_only: bool, allow_block: bool) -> Result<Disk, BlockError> {
        let (mode, hint) = if read_only {
            ("read-only", "")
        } else {
            ("read-write", " (attach it read-only, or fix its permissions)")
        };
        let opened = crate::files::open_nofollow(path, !read_only);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlockError::NotFound { path: path.to_owned() })
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(BlockError::Symlink { path: path.to_owned() })
            }
            // O_WRONLY|O_NONBLOCK on a FIFO without a reader, or a socket.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                return Err(BlockError::NotAFileOrBlockDevice { path: path.to_owned(), kind: "FIFO or socket" })
            }
            Err(source) => {
                let denied =
                    source.kind() == io::ErrorKind::PermissionDenied || source.raw_os_error() == Some(libc::EROFS);
                return Err(BlockError::Open {
                    path: path.to_owned(),
                    mode,
                    hint: if denied { hint } else { "" },
                    source,
                });
            }
        };
        let ft = file.metadata().map_err(|source| BlockError::Stat { path: path.to_owned(), source })?.file_type();
        if ft.is_block_device() && !allow_block {
            return Err(BlockError::BlockDeviceNotAllowed { path: path.to_owned() });
        }
        if !(ft.is_file() || ft.is_block_device()) {
            let kind = crate::files::kind_of(ft);
            return Err(BlockError::NotAFileOrBlockDevice { path: path.to_owned(), kind });
        }
        // Back to blocking I/O for the data path.
        crate::files::set_blocking(&file).map_err(|source| BlockError::Stat { path: path.to_owned(), source })?;
        // Works for regular files and block devices alike.
        let size = file.seek(SeekFrom::End(0)).map_err(|source| BlockError::Size { path: path.to_owned(), source })?;
        // As Firecracker: any size, even 0 (Kata's disk pool attaches empty
        // files and swaps real images in with PATCH /drives after boot).
        if size % SECTOR_SIZE != 0 {
            log::warn!(
                "disk image {} is {size} bytes, not a multiple of {SECTOR_SIZE}: its last {} bytes are not exposed",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        Ok(Disk { file, path: path.to_owned(), sectors: size / SECTOR_SIZE, read_only })
    }

    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the guest memory segments `segs`, in order, from the disk
    /// starting at byte `pos` (one preadv for the whole request when it can).
    pub fn read_to_guest(&self, mem: &GuestMemory, segs: &[Segment], pos: u64) -> io::Result<()> {
        self.transfer(mem, segs, pos, Direction::ToGuest)
    }

    /// Writes the guest memory segments `segs`, in order, to the disk starting
    /// at byte `pos`.
    pub fn write_from_guest(&self, mem: &GuestMemory, segs: &[Segment], pos: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        self.transfer(mem, segs, pos, Direction::FromGuest)
    }

    fn transfer(&self, mem: &GuestMemory, segs: &[Segment], pos: u64, dir: Direction) -> io::Result<()> {
        // Host views of the guest buffers. A segment may span several memory
        // regions, hence several slices. The guards keep each mapping valid
        // while the kernel uses the pointers (a mutable guard also covers reads).
        let mut slices = Vec::with_capacity(segs.len());
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(segs.len());
        for seg in segs {
            for slice in GuestMemoryBackend::get_slices(mem, seg.addr, seg.len as usize) {
                let slice = slice.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let guard = slice.ptr_guard_mut();
                iovs.push(libc::iovec { iov_base: guard.as_ptr().cast(), iov_len: slice.len() });
                slices.push((slice, guard));
            }
        }
        let fd = self.file.as_raw_fd();
        let mut first = 0usize;
        let mut pos = pos;
        while first < iovs.len() {
            let count = (iovs.len() - first).min(IOV_MAX) as libc::c_int;
            let iov = iovs[first..].as_ptr();
            let off = pos as libc::off_t;
            // SAFETY: every iovec describes mapped guest RAM (bounds-checked by
            // get_slices) whose guard is alive in `slices`; `count` entries from
            // `iov` are initialised. The kernel writes (preadv) or reads (pwritev)
            // only those bytes. No Rust reference to guest memory exists, so a
            // concurrent guest access is no aliasing violation.
            let r = unsafe {
                match dir {
                    Direction::ToGuest => libc::preadv(fd, iov, count, off),
                    Direction::FromGuest => libc::pwritev(fd, iov, count, off),
                }
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Err(io::Error::from(match dir {
                    Direction::ToGuest => io::ErrorKind::UnexpectedEof,
                    Direction::FromGuest => io::ErrorKind::WriteZero,
                }));
            }
            pos += r as u64;
            first = advance(&mut iovs, first, r as usize);
        }
        if dir == Direction::ToGuest {
            // Dirty-page tracking, for when guest memory carries a bitmap.
            for (slice, _) in &slices {
                slice.bitmap().mark_dirty(0, slice.len());
            }
        }
        Ok(())
    }

    /// Makes completed writes durable (VIRTIO_BLK_T_FLUSH).
    pub fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }
}

/// Consumes `done` transferred bytes from `iovs[first..]`; returns the new
/// first unfinished iovec. A partly done iovec is resumed in place.
fn advance(iovs: &mut [libc::iovec], mut first: usize, mut done: usize) -> usize {
    while done > 0 && first < iovs.len() {
        let iov = &mut iovs[first];
        if done >= iov.iov_len {
            done -= iov.iov_len;
            first += 1;
        } else {
            // SAFETY: `done < iov_len`, so the new base stays inside the same
            // guest buffer.
            iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(done).cast() };
            iov.iov_len -= done;
            done = 0;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::{image, TempDir};

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr: GuestAddress(addr), len }
    }
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[test]
    fn open_errors_name_path_and_problem() {
        let dir = TempDir::new();
        let missing = dir.path().join("nope.img");
        let e = Disk::open(&missing, false).unwrap_err().to_string();
        assert!(e.contains("nope.img") && e.contains("does not exist"), "{e}");

        let e = Disk::open(dir.path(), true).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");

        let e = Disk::open(Path::new("/dev/null"), true).unwrap_err().to_string();
        assert!(e.contains("/dev/null") && e.contains("character device"), "{e}");
    }

    /// Kata's placeholder drives are empty files; Firecracker takes them.
    #[test]
    fn an_empty_or_partial_sector_image_is_a_zero_sector_disk() {
        for len in [0, 100] {
            let (_d, p) = image(&vec![0u8; len]);
            let disk = Disk::open(&p, true).unwrap();
            assert_eq!(disk.sectors(), 0, "{len} bytes");
        }
    }

    #[test]
    fn capacity_rounds_down_to_whole_sectors() {
        let (_d, p) = image(&[0u8; 512 * 3 + 100]);
        let disk = Disk::open(&p, false).unwrap();
        assert_eq!(disk.sectors(), 3);
        assert!(!disk.read_only());
    }

    #[test]
    fn transfers_cross_guest_region_boundaries() {
        let data: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
        let (_d, p) = image(&data);
        let disk = Disk::open(&p, false).unwrap();
        // Two adjacent regions: a 1 KiB transfer at 0xfe00 spans both.
        let mem: GuestMemory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000), (GuestAddress(0x1_0000), 0x1_0000)]).unwrap();
        disk.read_to_guest(&mem, &[seg(0xfe00, 1024)], 512).unwrap();
        let mut got = vec![0u8; 1024];
        mem.read_slice(&mut got, GuestAddress(0xfe00)).unwrap();
        assert_eq!(got, data[512..1536]);

        mem.write_slice(&[0xab; 1024], GuestAddress(0xfe00)).unwrap();
        disk.write_from_guest(&mem, &[seg(0xfe00, 1024)], 1024).unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(&on_disk[1024..2048], &[0xab; 1024][..]);
        assert_eq!(&on_disk[..1024], &data[..1024]);

        // Outside guest memory: an error, no panic, nothing transferred.
        assert!(disk.read_to_guest(&mem, &[seg(0x1_ff00, 512)], 0).is_err());
        // Past the end of the file.
        assert!(disk.read_to_guest(&mem, &[seg(0, 512)], 4096).is_err());
    }

    /// Many small scattered segments (more than one preadv's worth of iovecs)
    /// land in order.
    #[test]
    fn vectored_transfer_keeps_segment_order() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 256) as u8).collect();
        let (_d, p) = image(&data);
        let disk = Disk::open(&p, false).unwrap();
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        // 2048 segments of 4 bytes, placed backwards with gaps.
        let segs: Vec<Segment> = (0..2048u64).map(|i| seg(0x8_0000 - i * 16, 4)).collect();
        disk.read_to_guest(&mem, &segs, 0).unwrap();
        for (i, s) in segs.iter().enumerate() {
            let mut b = [0u8; 4];
            mem.read_slice(&mut b, s.addr).unwrap();
            assert_eq!(b, data[i * 4..i * 4 + 4], "segment {i}");
        }
        // And back out, shifted by one sector.
        disk.write_from_guest(&mem, &segs, 512).unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(&on_disk[512..512 + 8192 - 512], &data[..8192 - 512]);
    }

    #[test]
    fn advance_resumes_partial_transfers() {
        let mut bufs = [[0u8; 8]; 3];
        let mut iovs: Vec<libc::iovec> =
            bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: 8 }).collect();
        let base1 = iovs[1].iov_base as usize;
        // 11 bytes: the first buffer and 3 bytes of the second.
        assert_eq!(advance(&mut iovs, 0, 11), 1);
        assert_eq!(iovs[1].iov_len, 5);
        assert_eq!(iovs[1].iov_base as usize, base1 + 3);
        // Exactly the rest of the second.
        assert_eq!(advance(&mut iovs, 1, 5), 2);
        assert_eq!(advance(&mut iovs, 2, 8), 3);
        assert_eq!(advance(&mut iovs, 3, 0), 3);
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let (_d, p) = image(&[7u8; 1024]);
        let disk = Disk::open(&p, true).unwrap();
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let e = disk.write_from_guest(&mem, &[seg(0, 512)], 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        assert_eq!(std::fs::read(&p).unwrap(), vec![7u8; 1024]);
        disk.flush().unwrap();
    }
}
