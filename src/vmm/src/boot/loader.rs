//! Loads a bzImage or ELF vmlinux and an initrd into guest memory.

use std::fs::File;

use crate::files::open_input;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{HIMEM_START, MMIO_GAP_START};
use crate::memory::GuestMemory;

/// "HdrS" at offset 0x202 of a bzImage (Linux boot protocol).
const BZIMAGE_MAGIC: u32 = 0x5372_6448;
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// The 64-bit entry point of a bzImage is 0x200 past its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// xloadflags bit: the kernel has a 64-bit entry point (boot protocol 2.12+).
const XLF_KERNEL_64: u16 = 1 << 0;
/// Where the initrd may go when the kernel sets no limit (ELF boot).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
const PAGE_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open kernel {path}: {err}")]
    KernelOpen { path: String, err: std::io::Error },
    #[error("kernel {0} is neither a bzImage nor an ELF vmlinux")]
    UnknownFormat(String),
    #[error("kernel {0} has no 64-bit entry point (bzImage boot protocol 2.12+ needed)")]
    No64BitEntry(String),
    #[error("cannot load kernel {path}: {source}")]
    Load { path: String, source: linux_loader::loader::Error },
    #[error("cannot open initrd {path}: {err}")]
    InitrdOpen { path: String, err: std::io::Error },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x} after the kernel; give the guest more memory (--mem)")]
    InitrdTooBig { path: String, size: u64, limit: u64 },
    #[error("cannot read initrd {path} into guest memory: {source}")]
    InitrdRead { path: String, source: vm_memory::GuestMemoryError },
}

/// Where the kernel was loaded and how to enter it.
pub struct LoadedKernel {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage setup header, if the kernel was a bzImage.
    pub setup_header: Option<setup_header>,
}

pub struct LoadedInitrd {
    pub addr: GuestAddress,
    pub size: u64,
}

enum Format {
    BzImage,
    Elf,
}

fn detect(file: &mut File) -> std::io::Result<Option<Format>> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))?;
    if file.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC {
        return Ok(Some(Format::Elf));
    }
    file.seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET))?;
    if file.read_exact(&mut magic).is_ok() && u32::from_le_bytes(magic) == BZIMAGE_MAGIC {
        return Ok(Some(Format::BzImage));
    }
    Ok(None)
}

pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, LoadError> {
    let p = path.display().to_string();
    let mut file = open_input(path, false, false).map_err(|err| LoadError::KernelOpen { path: p.clone(), err })?;
    let format = detect(&mut file).map_err(|err| LoadError::KernelOpen { path: p.clone(), err })?;
    let himem = Some(GuestAddress(HIMEM_START));
    match format {
        Some(Format::BzImage) => {
            let r = BzImage::load(mem, None, &mut file, himem)
                .map_err(|source| LoadError::Load { path: p.clone(), source })?;
            let hdr = r.setup_header.ok_or_else(|| LoadError::UnknownFormat(p.clone()))?;
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LoadError::No64BitEntry(p));
            }
            Ok(LoadedKernel {
                entry: GuestAddress(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                end: r.kernel_end,
                setup_header: Some(hdr),
            })
        }
        Some(Format::Elf) => {
            let r =
                Elf::load(mem, None, &mut file, himem).map_err(|source| LoadError::Load { path: p.clone(), source })?;
            Ok(LoadedKernel { entry: r.kernel_load, end: r.kernel_end, setup_header: None })
        }
        None => Err(LoadError::UnknownFormat(p)),
    }
}

/// Puts the initrd page-aligned as high as possible below the kernel's limit
/// and the top of low RAM (where Linux expects it), above the kernel.
pub fn load_initrd(mem: &GuestMemory, path: &Path, kernel: &LoadedKernel) -> Result<LoadedInitrd, LoadError> {
    let p = path.display().to_string();
    let mut file = open_input(path, false, false).map_err(|err| LoadError::InitrdOpen { path: p.clone(), err })?;
    let size = file.metadata().map_err(|err| LoadError::InitrdOpen { path: p.clone(), err })?.len();
    let addr_max = kernel
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m != 0)
        .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
    let low_ram_end = mem.last_addr().0.min(MMIO_GAP_START - 1) + 1;
    let limit = low_ram_end.min(addr_max + 1);
    let too_big = || LoadError::InitrdTooBig { path: p.clone(), size, limit };
    let start = limit.checked_sub(size).ok_or_else(too_big)? & !(PAGE_SIZE - 1);
    if start < kernel.end.max(HIMEM_START) {
        return Err(too_big());
    }
    mem.read_exact_volatile_from(GuestAddress(start), &mut file, size as usize)
        .map_err(|source| LoadError::InitrdRead { path: p, source })?;
    Ok(LoadedInitrd { addr: GuestAddress(start), size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(bytes: &[u8]) -> (vmm_sys_util::tempfile::TempFile, std::path::PathBuf) {
        let t = vmm_sys_util::tempfile::TempFile::new().unwrap();
        t.as_file().write_all(bytes).unwrap();
        let p = t.as_path().to_path_buf();
        (t, p)
    }

    #[test]
    fn garbage_kernel_is_rejected_by_name() {
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let (_t, p) = temp_file(&[0u8; 4096]);
        match load_kernel(&mem, &p) {
            Err(LoadError::UnknownFormat(name)) => assert!(name.contains(p.to_str().unwrap())),
            other => panic!("unexpected {:?}", other.err()),
        }
    }

    #[test]
    fn missing_kernel_names_path() {
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let err = load_kernel(&mem, Path::new("/nonexistent/vmlinuz")).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
    }

    #[test]
    fn initrd_goes_high_and_too_big_is_refused() {
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let k = LoadedKernel { entry: GuestAddress(0x100200), end: 0x200000, setup_header: None };
        let (_t, p) = temp_file(&[0xabu8; 10000]);
        let i = load_initrd(&mem, &p, &k).unwrap();
        assert_eq!(i.size, 10000);
        assert_eq!(i.addr.0 % PAGE_SIZE, 0);
        assert!(i.addr.0 + i.size <= 64 << 20);
        assert!(i.addr.0 >= (64 << 20) - 2 * PAGE_SIZE - 10000);
        assert_eq!(mem.read_obj::<u8>(i.addr).unwrap(), 0xab);
        let big = vmm_sys_util::tempfile::TempFile::new().unwrap();
        big.as_file().set_len(80 << 20).unwrap();
        let err = load_initrd(&mem, big.as_path(), &k).err().unwrap();
        assert!(matches!(err, LoadError::InitrdTooBig { .. }), "{err}");
    }
}
