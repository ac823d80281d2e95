//! The zero page (`struct boot_params`): setup header, command line, initrd,
//! e820 memory map, RSDP address.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::loader::{LoadedInitrd, LoadedKernel};
use crate::layout::{CMDLINE_START, EBDA_START, HIMEM_START, ZERO_PAGE_START};
use crate::memory::GuestMemory;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// "HdrS" and 0xAA55: what the kernel checks in a setup header we build (ELF boot).
const HDRS_MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// type_of_loader = "undefined" boot loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Kernel alignment used when we build the setup header (16 MiB, like x86 defaults).
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;
/// loadflags: the heap_end_ptr field is valid.
const CAN_USE_HEAP: u8 = 1 << 7;
/// Maximum e820 entries in the zero page.
const E820_MAX: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("too many e820 entries")]
    E820Full,
    #[error("cannot write boot parameters into guest memory: {0}")]
    Write(vm_memory::GuestMemoryError),
}

fn add_e820(params: &mut boot_params, addr: u64, size: u64, kind: u32) -> Result<(), ParamsError> {
    let i = params.e820_entries as usize;
    if i >= E820_MAX.min(params.e820_table.len()) {
        return Err(ParamsError::E820Full);
    }
    params.e820_table[i] = boot_e820_entry { addr, size, r#type: kind };
    params.e820_entries += 1;
    Ok(())
}

/// Writes the command line and the zero page for `kernel`.
pub fn write_boot_params(
    mem: &GuestMemory,
    kernel: &LoadedKernel,
    initrd: Option<&LoadedInitrd>,
    cmdline: &str,
    rsdp: Option<GuestAddress>,
) -> Result<(), ParamsError> {
    let mut params = boot_params::default();
    match kernel.setup_header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.header = HDRS_MAGIC;
            params.hdr.boot_flag = BOOT_FLAG_MAGIC;
            params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
        }
    }
    // The kernel's own limit (cmdline_size, boot protocol 2.06+) or the classic 255.
    let max = match params.hdr.cmdline_size {
        0 => 255,
        n => (n as usize).min(crate::layout::CMDLINE_MAX_SIZE - 1),
    };
    if cmdline.len() > max {
        return Err(ParamsError::CmdlineTooLong { len: cmdline.len(), max });
    }
    if cmdline.contains('\0') {
        return Err(ParamsError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START)).map_err(ParamsError::Write)?;

    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline.len() as u32;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = (ZERO_PAGE_START - 0x200) as u16;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr.0 as u32;
        params.hdr.ramdisk_size = i.size as u32;
        params.ext_ramdisk_image = (i.addr.0 >> 32) as u32;
        params.ext_ramdisk_size = (i.size >> 32) as u32;
    }
    if let Some(r) = rsdp {
        params.acpi_rsdp_addr = r.0;
    }

    // Low RAM up to the EBDA, the BIOS area reserved, then every RAM region from 1 MiB.
    add_e820(&mut params, 0, EBDA_START, E820_RAM)?;
    add_e820(&mut params, EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED)?;
    for region in mem.iter() {
        let start = region.start_addr().0.max(HIMEM_START);
        let end = region.start_addr().0 + region.len();
        if end > start {
            add_e820(&mut params, start, end - start, E820_RAM)?;
        }
    }
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START)).map_err(ParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> LoadedKernel {
        LoadedKernel { entry: GuestAddress(0x1000000), end: 0x2000000, setup_header: None }
    }

    #[test]
    fn e820_and_cmdline() {
        let mem = crate::memory::create_guest_memory(128).unwrap();
        let initrd = LoadedInitrd { addr: GuestAddress(0x700_0000), size: 0x1234 };
        write_boot_params(&mem, &kernel(), Some(&initrd), "console=ttyS0", None).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(p.e820_entries, 3);
        let e: Vec<(u64, u64, u32)> = p.e820_table[..3].iter().map(|x| (x.addr, x.size, x.r#type)).collect();
        assert_eq!(e[0], (0, EBDA_START, E820_RAM));
        assert_eq!(e[1].2, E820_RESERVED);
        assert_eq!(e[2], (HIMEM_START, (128 << 20) - HIMEM_START, E820_RAM));
        assert_eq!({ p.hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        let mut buf = [0u8; 14];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
    }

    #[test]
    fn long_cmdline_is_refused() {
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let long = "x".repeat(300);
        let err = write_boot_params(&mem, &kernel(), None, &long, None).unwrap_err();
        assert!(matches!(err, ParamsError::CmdlineTooLong { len: 300, max: 255 }), "{err}");
    }
}
